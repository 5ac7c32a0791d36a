"""CLIP image preprocessing for one RGB image -> ``pixel_values: [3, H, W]`` float32.

``FastClipPreprocessor`` does what ``CLIPImageProcessor`` (PIL backend) does -- bicubic resize of
the shortest edge, center crop, rescale in float64 then float32, per-channel normalise -- without
its per-call validation overhead, and equals its output exactly (tests/service/runners check it
on many sizes). Processors it does not recognise go through ``ProcessorPreprocessor``.
Both check the size an image would have after resizing before resizing it (``media.check_resize``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from service.media import shortest_edge_resize


class ImagePreprocessor(Protocol):
    def __call__(self, image: Image.Image) -> torch.Tensor: ...


class ProcessorPreprocessor:
    """Call the transformers image processor per image (any processor, slower)."""

    def __init__(self, image_processor: Any) -> None:
        self._ip = image_processor
        shortest = _fields(getattr(image_processor, "size", None)).get("shortest_edge")
        self._shortest = int(shortest) if shortest else None

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if self._shortest is not None:
            shortest_edge_resize(*image.size, self._shortest)  # refuses what would grow too large
        return self._ip(images=[image], return_tensors="pt")["pixel_values"][0]


class FastClipPreprocessor:
    def __init__(self, image_processor: Any) -> None:
        ip = image_processor
        size, crop = _fields(ip.size), _fields(ip.crop_size)
        self.shortest = int(size["shortest_edge"])
        self.crop_h, self.crop_w = int(crop["height"]), int(crop["width"])
        self.resample = int(ip.resample)
        self.scale = float(ip.rescale_factor)
        self.mean = np.asarray(ip.image_mean, dtype=np.float32)
        self.std = np.asarray(ip.image_std, dtype=np.float32)

    @staticmethod
    def supports(ip: Any) -> bool:
        size, crop = _fields(getattr(ip, "size", None)), _fields(getattr(ip, "crop_size", None))
        return (type(ip).__name__ in {"CLIPImageProcessorPil", "CLIPImageProcessor"}
                and getattr(ip, "backend", "pil") == "pil"
                and set(size.keys()) == {"shortest_edge"} and {"height", "width"} <= set(crop.keys())
                and ip.do_resize and ip.do_center_crop and ip.do_rescale and ip.do_normalize
                and not getattr(ip, "do_pad", False)
                and len(ip.image_mean) == 3 and len(ip.image_std) == 3)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        size = shortest_edge_resize(*image.size, self.shortest)
        image = image.resize(size, resample=self.resample)
        arr = np.asarray(image)  # [H, W, 3] uint8
        h, w = arr.shape[:2]
        top, left = (h - self.crop_h) // 2, (w - self.crop_w) // 2
        if top < 0 or left < 0:  # crop larger than the image: transformers pads; keep its exact logic
            raise ValueError("crop larger than the resized image")
        arr = arr[top:top + self.crop_h, left:left + self.crop_w]
        x = (arr.astype(np.float64) * self.scale).astype(np.float32)
        x = (x - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def _fields(size: Any) -> dict[str, Any]:
    """The set entries of a transformers SizeDict or a plain dict."""
    if size is None:
        return {}
    items = size.items() if isinstance(size, dict) else vars(size).items()
    return {k: v for k, v in items if v is not None}


def image_preprocessor(image_processor: Any) -> ImagePreprocessor:
    """The fast path when it provably matches, else the processor itself."""
    slow = ProcessorPreprocessor(image_processor)
    if not FastClipPreprocessor.supports(image_processor):
        return slow
    fast = FastClipPreprocessor(image_processor)
    if fast.crop_h > fast.shortest or fast.crop_w > fast.shortest:
        return slow
    return fast
