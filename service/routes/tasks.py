"""POST /v1/caption and /v1/vqa: one image and one instruction through the generation runners."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.engine.generation import CAPTION_PROMPT, image_prompt, start_generation
from service.errors import PayloadTooLarge
from service.routes.deps import engine_of, generation_result, json_response, require_api_key, settings_of
from service.schemas.chat import CaptionRequest, Sampled, TextResponse, VqaRequest

router = APIRouter(tags=["generation"], dependencies=[Depends(require_api_key)])


@router.post("/v1/caption", responses={200: {"model": TextResponse}})
async def caption(body: CaptionRequest, request: Request) -> Response:
    return await _run(request, "caption", body, body.image, body.prompt or CAPTION_PROMPT, body.model)


@router.post("/v1/vqa", responses={200: {"model": TextResponse}})
async def vqa(body: VqaRequest, request: Request) -> Response:
    return await _run(request, "vqa", body, body.image, body.question, body.model)


async def _run(request: Request, task: str, body: Sampled, image: str, text: str, model: str | None) -> Response:
    s = settings_of(request)
    if len(text) > s.max_text_chars:
        raise PayloadTooLarge(f"text exceeds {s.max_text_chars} characters", "text_too_long")
    pending = await start_generation(engine_of(request), task, image_prompt(image, text), body.max_tokens,
                                     body.temperature, body.top_p, (), body.robust, body.adapter, model,
                                     limits=request.app.state.limits)
    result = await generation_result(request, pending)
    gen = result.value
    return json_response({"model": result.model, "robust": result.robust, "adapter": result.adapter,
                          "text": gen.text, "finish_reason": gen.finish_reason,
                          "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                                    "total_tokens": gen.prompt_tokens + gen.completion_tokens}}, result)
