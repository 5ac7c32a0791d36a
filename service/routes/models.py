"""GET /v1/models: the served models (OpenAI list shape plus family, tasks and adapters)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.engine.models import ServedModel
from service.errors import NotFound
from service.routes.deps import engine_of, json_response, require_api_key

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    engine = engine_of(request)
    return json_response({"object": "list", "data": [_model(m, engine.started) for m in engine.models.values()]})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> Response:
    engine = engine_of(request)
    served = engine.models.get(model_id)
    if served is None:
        raise NotFound(f"model {model_id!r} is not served; served: {', '.join(engine.models)}", "model_not_found")
    return json_response(_model(served, engine.started))


def _model(m: ServedModel, created: int) -> dict[str, Any]:
    return {"id": m.name, "object": "model", "created": created, "owned_by": "radapt", "family": m.family,
            "tasks": sorted(m.tasks), "device": str(m.loaded.device),
            "dtype": str(m.loaded.dtype).removeprefix("torch."), "adapters": [a.name for a in m.adapters.infos()]}
