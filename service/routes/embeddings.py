"""POST /v1/embeddings: OpenAI-shaped text and image (data URI) embeddings, L2-normalised."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.engine.tasks import embed
from service.errors import BadRequest, PayloadTooLarge
from service.routes.deps import engine_of, json_response, require_api_key, settings_of, unless_disconnected
from service.schemas.clip import EmbeddingsRequest, EmbeddingsResponse

router = APIRouter(tags=["clip"], dependencies=[Depends(require_api_key)])


@router.post("/v1/embeddings", responses={200: {"model": EmbeddingsResponse}})
async def post_embeddings(body: EmbeddingsRequest, request: Request) -> Response:
    s = settings_of(request)
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs:
        raise BadRequest("input is empty", "empty_input")
    if len(inputs) > s.max_inputs:
        raise PayloadTooLarge(f"{len(inputs)} inputs; at most {s.max_inputs} per request", "too_many_inputs")
    if body.dimensions is not None:
        raise BadRequest("dimensions is not supported: CLIP embeddings have a fixed size", "unsupported_parameter")
    if body.modality == "text":
        if any(not x for x in inputs):
            raise BadRequest("text inputs must not be empty", "empty_input")
        if max(len(x) for x in inputs) > s.max_text_chars:
            raise PayloadTooLarge(f"a text input exceeds {s.max_text_chars} characters", "text_too_long")
    result = await unless_disconnected(request, embed(
        engine_of(request), inputs, body.modality, body.robust, body.adapter, body.model, request.app.state.limits))
    if body.encoding_format == "base64":
        data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(v.tobytes()).decode()}
                for i, v in enumerate(result.value)]
    else:
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(result.value)]
    return json_response({"object": "list", "data": data, "model": result.model,
                          "usage": {"prompt_tokens": result.usage, "total_tokens": result.usage},
                          "robust": result.robust, "adapter": result.adapter}, result)
