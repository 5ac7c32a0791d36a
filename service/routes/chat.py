"""POST /v1/chat/completions: OpenAI-compatible, image_url parts, usage, server-sent events.

A stream is: a role chunk, content chunks, a final chunk with ``finish_reason`` plus ``robust``,
``adapter``, ``adapter_id`` and ``timings`` (queue and inference seconds), the usage chunk when
``stream_options.include_usage``, then ``[DONE]``. A failure after the stream started (deadline,
shutdown) is one chunk with ``finish_reason: "error"`` and an ``error`` object, then ``[DONE]``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from service.engine.generation import Generating
from service.engine.tasks import TaskResult
from service.errors import ServiceError
from service.routes.deps import engine_of, generation_result, json_response, require_api_key
from service.schemas.chat import ChatRequest

router = APIRouter(tags=["generation"], dependencies=[Depends(require_api_key)])


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request) -> Response:
    engine = engine_of(request)
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    running = await engine.start_generation(
        messages=messages, sampling=body.sampling(body.max_completion_tokens, body.stop), robust=body.robust,
        adapter=body.adapter, model=body.model, task="chat", stream=body.stream)
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _events(running, cid=cid, created=created, include_usage=usage,
                         count_error=engine.metrics.count_error)
        return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})
    result = await generation_result(request, running)
    gen = result.value
    return json_response({
        "id": cid, "object": "chat.completion", "created": created, "model": result.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                     "finish_reason": gen.finish_reason, "logprobs": None}],
        "usage": _usage(result), "robust": result.robust, "adapter": result.adapter}, result)


def _usage(result: TaskResult) -> dict[str, int]:
    gen = result.value
    return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens}


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


async def _events(running: Generating, cid: str, created: int, include_usage: bool,
                  count_error: Any) -> AsyncIterator[bytes]:
    model = running.model
    head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return _event({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for delta in running.deltas():
            yield chunk({"content": delta})
        result = await running.result()
        timings = {"queue_time": round(result.queue_time, 6), "inference_time": round(result.inference_time, 6)}
        yield chunk({}, result.value.finish_reason, robust=result.robust, adapter=result.adapter,
                    adapter_id=result.adapter_id, timings=timings)
        if include_usage:
            yield _event({**head, "choices": [], "usage": _usage(result)})
    except ServiceError as exc:
        count_error(exc.code)
        yield chunk({}, "error", error={"message": exc.message, "type": exc.type, "code": exc.code})
    finally:
        running.cancel()  # a client that went away stops its row
    yield b"data: [DONE]\n\n"
