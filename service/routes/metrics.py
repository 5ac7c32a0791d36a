"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
