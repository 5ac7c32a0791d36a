"""Task-level calls on an Engine (what the routes and notebooks use).

    result = await classify(engine, image, ["cat", "dog"], robust=True)

Each call decodes and preprocesses its inputs in the worker pool (per request, before queueing,
so a bad input fails only its own request), queues one work item per image or text, and reports
the model, the mode and the adapter that ran with its queue and inference times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from service.engine.batcher import Done, WorkItem
from service.engine.engine import Engine, ServedModel
from service.media import MediaLimits, decode_image, fetch_image_bytes, is_url, open_image
from service.runners.clip import IMAGE, TEXT
from service.settings import DEFAULT_TEMPLATE

ImageInput = str | bytes | Image.Image


@dataclass(frozen=True)
class TaskResult:
    model: str
    robust: bool
    adapter: str | None
    adapter_id: str | None
    value: Any
    queue_time: float
    inference_time: float
    usage: int = 0  # prompt tokens (embeddings) or similar


def _timed(served: ServedModel, adapter: str | None, items: Sequence[WorkItem], value: Any, done: Sequence[Done],
           usage: int = 0) -> TaskResult:
    """The result with the adapter object that actually ran (its uid, from the batch's snapshot)."""
    uid = items[0].adapter_id if adapter is not None and items else None
    return TaskResult(served.name, adapter is not None, adapter, uid, value,
                      max((d.queue_time for d in done), default=0.0),
                      max((d.inference_time for d in done), default=0.0), usage)


async def to_image(image: ImageInput, limits: MediaLimits) -> Image.Image | bytes | str:
    """Fetch URLs on the event loop (async I/O); everything else is decoded in the pool."""
    if isinstance(image, str) and is_url(image):
        return await fetch_image_bytes(image, limits)
    return image


def decode_any(image: Image.Image | bytes | str, limits: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, bytes):
        return open_image(image, limits)
    return decode_image(image, limits)


async def classify(engine: Engine, image: ImageInput, labels: Sequence[str], template: str | None = None,
                   top_k: int | None = None, robust: bool | None = None, adapter: str | None = None,
                   model: str | None = None, limits: MediaLimits | None = None) -> TaskResult:
    """Zero-shot classification: ``value`` is ``[(label, score)]`` sorted by score."""
    served = engine.get(model, "classify")
    name = engine.mode(served, robust, adapter)
    limits = limits or engine.limits
    raw = await to_image(image, limits)
    runner = served.runner

    def prepare() -> Any:
        return runner.prepare_image(decode_any(raw, limits), labels, template or DEFAULT_TEMPLATE, top_k)

    payload = await engine.in_pool(prepare)
    items = [WorkItem(IMAGE, payload, name)]
    done = await engine.run(served, items)
    return _timed(served, name, items, done[0].value, done)


async def embed(engine: Engine, inputs: Sequence[Any], modality: str = "text", robust: bool | None = None,
                adapter: str | None = None, model: str | None = None,
                limits: MediaLimits | None = None) -> TaskResult:
    """Embeddings, L2-normalised: ``value`` is a list of float32 arrays ``[D]``, one per input."""
    served = engine.get(model, "embeddings")
    runner = served.runner
    limits = limits or engine.limits
    if modality == "image":
        name = engine.mode(served, robust, adapter)
        raws = [await to_image(x, limits) for x in inputs]
        payloads = await asyncio.gather(*(engine.in_pool(lambda r=r: runner.prepare_image(
            decode_any(r, limits))) for r in raws))
        items = [WorkItem(IMAGE, p, name) for p in payloads]
        usage = 0
    else:
        engine.mode(served, robust, adapter)  # validated, but R-Adapt acts on images only:
        name = None  # text embeddings are the same in both modes, and the response says so
        payloads = await engine.in_pool(runner.prepare_texts, list(inputs))
        items = [WorkItem(TEXT, p, None) for p in payloads]
        usage = sum(len(p.ids) for p in payloads)
    done = await engine.run(served, items)
    values = [np.asarray(d.value, dtype=np.float32) for d in done]
    return _timed(served, name, items, values, done, usage)
