"""Generation calls' inputs and handle: OpenAI messages in, text (or a stream of deltas) out.

    running = await engine.start_generation(messages, SamplingRequest(max_tokens=32), stream=True)
    async for delta in running.deltas(): ...
    result = await running.result()        # TaskResult whose value is a Generation
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from service.engine.scheduler import Generation, GenerationRequest
from service.engine.tasks import ImageInput, Mode, TaskResult
from service.errors import RequestTimeout

CAPTION_PROMPT = "Describe the image in one sentence."
ROLES = {"developer": "system"}  # OpenAI's newer name for the system role; chat templates know "system"


@dataclass(frozen=True)
class SamplingRequest:
    """Sampling values as a client sent them (None = the server's default); the engine validates them."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: Sequence[str] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    ignore_eos: bool = False


def split_messages(messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[ImageInput], int]:
    """OpenAI messages -> (processor messages with {"type": "image"} parts, image references in order,
    characters of text). Without HTTP an ``image_url.url`` may also be bytes or a PIL image."""
    converted, images, chars = [], [], 0
    for m in messages:
        role = ROLES.get(m["role"], m["role"])
        content = m["content"]
        if isinstance(content, str):
            converted.append({"role": role, "content": [{"type": "text", "text": content}]})
            chars += len(content)
            continue
        parts = []
        for part in content:
            if part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
                chars += len(part["text"])
            else:
                images.append(part["image_url"]["url"])
                parts.append({"type": "image"})
        converted.append({"role": role, "content": parts})
    return converted, images, chars


def image_prompt(image: ImageInput, text: str) -> list[dict[str, Any]]:
    """One user turn: an image then a text (captioning and VQA)."""
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                         {"type": "text", "text": text}]}]


class Generating:
    """A queued generation. ``cancel()`` (idempotent) frees its row and its admission slot."""

    def __init__(self, model: str, mode: Mode, request: GenerationRequest, start: float,
                 release: Callable[[], None]) -> None:
        self.model, self.mode, self.request, self.start = model, mode, request, start
        self._release: Callable[[], None] | None = release

    async def deltas(self) -> AsyncIterator[str]:
        """Text deltas until the row ends; raises the row's error (504 at the deadline)."""
        stream = self.request.stream
        assert stream is not None, "start_generation(stream=True) streams deltas"
        while True:
            left = self.request.deadline - time.monotonic()
            try:
                delta = await asyncio.wait_for(stream.queue.get(), max(left, 0.0))
            except asyncio.TimeoutError:
                self.cancel()
                raise RequestTimeout("generation did not finish within the request deadline") from None
            if delta is None:
                future = self.request.future
                if future.done() and not future.cancelled() and future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
                return
            yield delta

    async def result(self) -> TaskResult:
        left = self.request.deadline - time.monotonic()
        try:
            gen: Generation = await asyncio.wait_for(asyncio.shield(self.request.future), max(left, 0.0))
        except asyncio.TimeoutError:
            self.cancel()
            raise RequestTimeout("generation did not finish within the request deadline") from None
        finally:
            self._done()
        return TaskResult(self.model, self.mode, gen.adapter_id, gen,
                          max(0.0, time.monotonic() - self.start - gen.inference_time), gen.inference_time,
                          gen.prompt_tokens)

    def cancel(self) -> None:
        self.request.cancel()
        self._done()

    def _done(self) -> None:
        if self._release is not None:
            self._release, release = None, self._release
            release()
