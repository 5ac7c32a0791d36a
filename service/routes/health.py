"""GET /health/live (the process answers) and /health/ready (loaded, warm, batch loops alive, adapter
store read once when there is one; its state in ``adapter_store``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.routes.deps import engine_of, json_response

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> Response:
    return json_response({"status": "ok"})


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    engine = engine_of(request)
    if not engine.ready:
        body = {"status": engine.state}
        if engine.error:
            body["error"] = engine.error
        return json_response(body, status=503)
    wedged = engine.wedged()
    if wedged:
        return json_response({"status": "wedged", "models": wedged}, status=503)
    sync = request.app.state.adapter_sync
    if sync is None:
        return json_response({"status": "ready", "models": list(engine.models)})
    if not sync.first_done:  # a (re)started replica serves the store's adapters before it takes traffic
        return json_response({"status": "syncing_adapters"}, status=503)
    # the store unreachable does not fail readiness: what is loaded keeps serving; it is reported here
    return json_response({"status": "ready", "models": list(engine.models), "adapter_store": sync.status()})
