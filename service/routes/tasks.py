"""POST /v1/caption and /v1/vqa: one image and one instruction through the generation engine."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.engine.generation import CAPTION_PROMPT, image_prompt
from service.routes.deps import engine_of, generation_result, json_response, require_api_key
from service.schemas.chat import CaptionRequest, Sampled, TextResponse, VqaRequest

router = APIRouter(tags=["generation"], dependencies=[Depends(require_api_key)])


@router.post("/v1/caption", responses={200: {"model": TextResponse}})
async def caption(body: CaptionRequest, request: Request) -> Response:
    return await _run(request, task="caption", body=body, image=body.image, text=body.prompt or CAPTION_PROMPT,
                      model=body.model)


@router.post("/v1/vqa", responses={200: {"model": TextResponse}})
async def vqa(body: VqaRequest, request: Request) -> Response:
    return await _run(request, task="vqa", body=body, image=body.image, text=body.question, model=body.model)


async def _run(request: Request, task: str, body: Sampled, image: str, text: str, model: str | None) -> Response:
    running = await engine_of(request).start_generation(
        messages=image_prompt(image, text), sampling=body.sampling(), robust=body.robust, adapter=body.adapter,
        model=model, task=task)
    result = await generation_result(request, running)
    gen = result.value
    return json_response({"model": result.model, "robust": result.robust, "adapter": result.adapter,
                          "text": gen.text, "finish_reason": gen.finish_reason,
                          "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                                    "total_tokens": gen.prompt_tokens + gen.completion_tokens}}, result)
