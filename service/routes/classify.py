"""POST /v1/classify: zero-shot classification with CLIP."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.engine.tasks import classify
from service.errors import BadRequest, PayloadTooLarge
from service.routes.deps import engine_of, json_response, require_api_key, settings_of, unless_disconnected
from service.schemas.clip import ClassifyRequest, ClassifyResponse

router = APIRouter(tags=["clip"], dependencies=[Depends(require_api_key)])


@router.post("/v1/classify", responses={200: {"model": ClassifyResponse}})
async def post_classify(body: ClassifyRequest, request: Request) -> Response:
    """Scores are the softmax over the labels of CLIP's scaled cosine logits, best first."""
    s = settings_of(request)
    if len(body.labels) > s.max_labels:
        raise PayloadTooLarge(f"{len(body.labels)} labels; at most {s.max_labels} per request", "too_many_labels")
    if len(set(body.labels)) != len(body.labels):
        raise BadRequest("labels must be distinct", "duplicate_labels")
    template = body.template
    if template is not None and "{}" not in template:
        raise BadRequest("template must contain {} where the label goes ('{}' = the bare label)", "invalid_template")
    longest = max(len(x) for x in body.labels) + len(template or "")
    if longest > s.max_text_chars:
        raise PayloadTooLarge(f"a label (with its template) exceeds {s.max_text_chars} characters", "text_too_long")
    result = await unless_disconnected(request, classify(
        engine_of(request), body.image, body.labels, template, body.top_k, body.robust, body.adapter, body.model,
        request.app.state.limits))
    results = [{"label": label, "score": score} for label, score in result.value]
    return json_response({"model": result.model, "robust": result.robust, "adapter": result.adapter,
                          "results": results}, result)
