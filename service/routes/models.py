"""GET /v1/models: the served models (OpenAI list shape plus family, tasks and adapters)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.routes.deps import engine_of, json_response, require_api_key

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    engine = engine_of(request)
    data = [{"id": name, "object": "model", "owned_by": "radapt", "family": m.family, "tasks": sorted(m.tasks),
             "device": str(m.loaded.device), "dtype": str(m.loaded.dtype).removeprefix("torch."),
             "adapters": [a.name for a in m.adapters.infos()]} for name, m in engine.models.items()]
    return json_response({"object": "list", "data": data})
