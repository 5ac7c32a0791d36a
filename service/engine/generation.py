"""Generation calls on an Engine: chat (OpenAI messages), captioning and VQA, optionally streamed.

    result = await generate(engine, messages, max_tokens=32, robust=True)
    async for delta in stream.deltas(): ...   # with stream=True: see ``start_generation``

Messages use the OpenAI shape; image parts (data URIs) are decoded and the processor runs in the
worker pool, per request, before queueing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from service.engine.batcher import WorkItem
from service.engine.engine import Engine, ServedModel
from service.engine.tasks import ImageInput, TaskResult, decode_any, to_image
from service.errors import BadRequest, PayloadTooLarge
from service.media import MediaLimits
from service.runners.vlm import GENERATE, Generation, Sampling, TokenStream

CAPTION_PROMPT = "Describe the image in one sentence."


def split_messages(messages: Sequence[dict[str, Any]], max_images: int
                   ) -> tuple[list[dict[str, Any]], list[ImageInput]]:
    """OpenAI messages -> (processor messages with {"type": "image"} parts, image references in order).

    Without HTTP an ``image_url.url`` may also be bytes or a PIL image."""
    converted, images = [], []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            converted.append({"role": m["role"], "content": [{"type": "text", "text": content}]})
            continue
        parts = []
        for part in content:
            if part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
            else:
                images.append(part["image_url"]["url"])
                parts.append({"type": "image"})
        converted.append({"role": m["role"], "content": parts})
    if len(images) > max_images:
        raise PayloadTooLarge(f"{len(images)} images; at most {max_images} per request", "too_many_images")
    return converted, images


@dataclass
class Pending:
    """A queued generation: its stream of deltas (when streaming) and its final result."""

    served: ServedModel
    adapter: str | None
    item: WorkItem
    waiter: asyncio.Future
    stream: TokenStream | None

    async def deltas(self) -> AsyncIterator[str]:
        """Text deltas until the row finishes; raises the item's error if its batch failed."""
        assert self.stream is not None
        while True:
            getter = asyncio.ensure_future(self.stream.queue.get())
            await asyncio.wait({getter, self.waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                if self.waiter.exception() is not None:
                    raise self.waiter.exception()  # type: ignore[misc]
                continue  # the result is in; the final None is on its way
            delta = getter.result()
            if delta is None:
                return
            yield delta

    async def result(self) -> TaskResult:
        done = await self.waiter
        uid = self.item.adapter_id if self.adapter is not None else None
        value: Generation = done.value
        return TaskResult(self.served.name, self.adapter is not None, self.adapter, uid, value,
                          done.queue_time, done.inference_time, value.prompt_tokens)

    def cancel(self) -> None:
        self.waiter.cancel()
        self.item.future.cancel()


async def start_generation(engine: Engine, task: str, messages: Sequence[dict[str, Any]], max_tokens: int | None,
                           temperature: float | None = None, top_p: float | None = None,
                           stop: Sequence[str] = (), robust: bool | None = None, adapter: str | None = None,
                           model: str | None = None, stream: bool = False,
                           limits: MediaLimits | None = None) -> Pending:
    """Validate, preprocess (pool) and queue one generation; returns at once with a Pending."""
    s = engine.settings
    served = engine.get(model, task)
    name = engine.mode(served, robust, adapter)
    if max_tokens is not None and max_tokens > s.max_new_tokens_limit:
        raise BadRequest(f"max_tokens {max_tokens} exceeds this server's limit of {s.max_new_tokens_limit}",
                         "max_tokens_too_large")
    limits = limits or engine.limits
    converted, refs = split_messages(messages, s.max_images_per_request)
    raws = [await to_image(r, limits) for r in refs]
    sampling = Sampling(max_tokens or s.max_new_tokens, temperature or 0.0, top_p if top_p is not None else 1.0,
                        tuple(stop))
    tokens = TokenStream(asyncio.get_running_loop()) if stream else None
    runner = served.runner

    def prepare() -> Any:
        return runner.prepare(converted, [decode_any(r, limits) for r in raws], sampling, tokens)

    prompt = await engine.in_pool(prepare)
    item = served.batcher.submit(WorkItem(GENERATE, prompt, name))
    engine.metrics.robust_requests.labels(model=served.name, mode="standard" if name is None else "robust").inc()
    waiter = asyncio.ensure_future(served.batcher.wait(item))
    return Pending(served, name, item, waiter, tokens)


async def generate(engine: Engine, messages: Sequence[dict[str, Any]], max_tokens: int | None = None,
                   task: str = "chat", **kw: Any) -> TaskResult:
    pending = await start_generation(engine, task, messages, max_tokens, **kw)
    try:
        return await pending.result()
    except BaseException:
        pending.cancel()
        raise


def image_prompt(image: ImageInput, text: str) -> list[dict[str, Any]]:
    """One user turn: an image (data URI, base64, bytes or a PIL image) then a text (caption and VQA)."""
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                         {"type": "text", "text": text}]}]
