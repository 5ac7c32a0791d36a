"""POST /v1/embeddings: OpenAI-shaped text and image (data URI) embeddings, L2-normalised."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.errors import BadRequest
from service.routes.deps import engine_of, json_response, require_api_key, unless_disconnected
from service.schemas.clip import EmbeddingsRequest, EmbeddingsResponse

router = APIRouter(tags=["clip"], dependencies=[Depends(require_api_key)])


@router.post("/v1/embeddings", responses={200: {"model": EmbeddingsResponse}})
async def post_embeddings(body: EmbeddingsRequest, request: Request) -> Response:
    if body.dimensions is not None:
        raise BadRequest("dimensions is not supported: CLIP embeddings have a fixed size", "unsupported_parameter")
    inputs = [body.input] if isinstance(body.input, str) else body.input
    result = await unless_disconnected(request, engine_of(request).embed(
        inputs=inputs, modality=body.modality, robust=body.robust, adapter=body.adapter, model=body.model))
    if body.encoding_format == "base64":
        data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(v.tobytes()).decode()}
                for i, v in enumerate(result.value)]
    else:
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(result.value)]
    return json_response({"object": "list", "data": data, "model": result.model,
                          "usage": {"prompt_tokens": result.usage, "total_tokens": result.usage},
                          "robust": result.robust, "adapter": result.adapter}, result)
