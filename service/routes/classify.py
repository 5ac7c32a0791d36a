"""POST /v1/classify: zero-shot classification with CLIP."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.routes.deps import engine_of, json_response, require_api_key, unless_disconnected
from service.schemas.clip import ClassifyRequest, ClassifyResponse

router = APIRouter(tags=["clip"], dependencies=[Depends(require_api_key)])


@router.post("/v1/classify", responses={200: {"model": ClassifyResponse}})
async def post_classify(body: ClassifyRequest, request: Request) -> Response:
    """Scores are the softmax over the labels of CLIP's scaled cosine logits, best first."""
    result = await unless_disconnected(request, engine_of(request).classify(
        image=body.image, labels=body.labels, template=body.template, top_k=body.top_k, robust=body.robust,
        adapter=body.adapter, model=body.model))
    results = [{"label": label, "score": score} for label, score in result.value]
    return json_response({"model": result.model, "robust": result.robust, "adapter": result.adapter,
                          "results": results}, result)
