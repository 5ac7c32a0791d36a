"""Deterministic request images: the same bytes go to our server, the peer and the limit."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def make_images(n: int, size: int = 224, seed: int = 0) -> list[bytes]:
    """``n`` distinct JPEG images of ``size`` x ``size`` (smooth noise, so JPEG stays realistic)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = rng.integers(0, 256, size=(size // 16 + 1, size // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def decode(jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(jpeg)).convert("RGB")
