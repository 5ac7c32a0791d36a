"""What the engine's calls return, the mode they run in, and how their image inputs become RGB images.

A call's ``Mode`` is resolved once, by ``Engine.mode``, and carried as it is to the work items, the
generation handle and the ``TaskResult`` (which reports it).

An image input is a data URI or bare base64 string (or an http(s) URL when remote images are on),
raw encoded bytes, or a PIL image (notebooks). URLs are fetched on the event loop (async I/O);
decoding runs in the engine's worker pool.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from service.media import MediaLimits, decode_image, fetch_image_bytes, is_url, open_image

ImageInput = str | bytes | Image.Image


@dataclass(frozen=True)
class Mode:
    """How a call runs: standard (``adapter`` None) or robust mode with the named adapter."""

    adapter: str | None = None

    @property
    def robust(self) -> bool:
        return self.adapter is not None

    @property
    def label(self) -> str:
        """The ``mode`` label of the ``radapt_robust_requests`` metric."""
        return "robust" if self.robust else "standard"


STANDARD = Mode()


@dataclass(frozen=True)
class TaskResult:
    """``queue_time``: the call's time outside the model (decoding, preprocessing, waiting);
    ``inference_time``: the model's time for its batch or its generation."""

    model: str
    mode: Mode
    adapter_id: str | None  # uid of the adapter object that ran
    value: Any
    queue_time: float
    inference_time: float
    usage: int = 0  # prompt tokens (embeddings)

    @property
    def robust(self) -> bool:
        return self.mode.robust

    @property
    def adapter(self) -> str | None:
        return self.mode.adapter

    @classmethod
    def of(cls, model: str, mode: Mode, done: Sequence[Any], value: Any, start: float,
           usage: int = 0) -> TaskResult:
        """From the batcher's ``Done`` items of one call that started at ``start`` (monotonic)."""
        inference = max((d.inference_time for d in done), default=0.0)
        uid = next((d.adapter_id for d in done if d.adapter_id is not None), None)
        return cls(model, mode, uid, value, max(0.0, time.monotonic() - start - inference), inference, usage)


async def to_image(image: ImageInput, limits: MediaLimits) -> Image.Image | bytes | str:
    """Fetch URLs on the event loop (async I/O); everything else is decoded in the pool."""
    if isinstance(image, str) and is_url(image):
        return await fetch_image_bytes(image, limits)
    return image


def decode_any(image: Image.Image | bytes | str, limits: MediaLimits) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, bytes):
        return open_image(image, limits)
    return decode_image(image, limits)
