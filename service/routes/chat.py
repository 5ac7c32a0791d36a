"""POST /v1/chat/completions: OpenAI-compatible, image_url parts, usage, server-sent events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from service.engine.generation import Pending, start_generation
from service.engine.tasks import TaskResult
from service.errors import PayloadTooLarge, ServiceError
from service.routes.deps import engine_of, generation_result, json_response, require_api_key, settings_of
from service.schemas.chat import ChatRequest

router = APIRouter(tags=["generation"], dependencies=[Depends(require_api_key)])


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request) -> Response:
    s = settings_of(request)
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    if sum(len(p.get("text", "")) for m in messages for p in _parts(m)) > s.max_text_chars:
        raise PayloadTooLarge(f"message text exceeds {s.max_text_chars} characters", "text_too_long")
    stop = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
    pending = await start_generation(
        engine_of(request), "chat", messages, body.max_completion_tokens or body.max_tokens, body.temperature,
        body.top_p, stop, body.robust, body.adapter, body.model, body.stream, request.app.state.limits)
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_events(pending, cid, created, usage), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})
    result = await generation_result(request, pending)
    gen = result.value
    return json_response({
        "id": cid, "object": "chat.completion", "created": created, "model": result.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                     "finish_reason": gen.finish_reason}],
        "usage": _usage(result), "robust": result.robust, "adapter": result.adapter}, result)


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return [{"text": content}] if isinstance(content, str) else content


def _usage(result: TaskResult) -> dict[str, int]:
    gen = result.value
    return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens}


def _chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None,
           **extra: Any) -> bytes:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


async def _events(pending: Pending, cid: str, created: int, include_usage: bool) -> AsyncIterator[bytes]:
    """Role chunk, content deltas, final chunk (finish_reason, robust, adapter), [usage], [DONE]."""
    model = pending.served.name
    sent = ""
    try:
        yield _chunk(cid, created, model, {"role": "assistant", "content": ""})
        async for delta in pending.deltas():
            sent += delta
            yield _chunk(cid, created, model, {"content": delta})
        result = await pending.result()
        gen = result.value
        if gen.text.startswith(sent) and len(gen.text) > len(sent):  # held-back tail
            yield _chunk(cid, created, model, {"content": gen.text[len(sent):]})
        yield _chunk(cid, created, model, {}, gen.finish_reason, robust=result.robust, adapter=result.adapter)
        if include_usage:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [], "usage": _usage(result)}
            yield b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
    except ServiceError as exc:
        err = {"error": {"message": exc.message, "type": exc.type, "code": exc.code}}
        yield b"data: " + json.dumps(err).encode() + b"\n\n"
    finally:
        pending.cancel()  # a client that went away stops its row
    yield b"data: [DONE]\n\n"
