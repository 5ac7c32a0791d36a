"""Images from folders, as [0, 1] tensors at the model's input resolution.

Two layouts: any folder of images, read recursively (unlabelled, for training an anchor), and an
ImageFolder (one subfolder per class, class name = folder name, for evaluation). Pixels go
through the model's own image processor (resize, centre crop, rescale) but are *not* normalised:
normalisation belongs inside the attacked model.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def list_images(root: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``root``, recursively, in a stable (sorted) order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def sample_paths(paths: list[Path], n: int | None, seed: int) -> list[Path]:
    """Up to ``n`` of ``paths`` drawn without replacement, deterministic in ``seed``."""
    if n is None or n >= len(paths):
        return list(paths)
    return sorted(random.Random(seed).sample(paths, n))


def load_pixels(paths: list[Path], image_processor: Any, batch_size: int = 64) -> torch.Tensor:
    """``[N, 3, H, W]`` fp32 in [0, 1]: resized and cropped by ``image_processor``, not normalised."""
    out = []
    for start in range(0, len(paths), batch_size):
        images = [_open_rgb(p) for p in paths[start:start + batch_size]]
        batch = image_processor(images, do_normalize=False, return_tensors="pt")["pixel_values"]
        out.append(batch.float().clamp(0.0, 1.0))
    if not out:
        raise ValueError("no images to load")
    return torch.cat(out)


def _open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"cannot read image {str(path)!r}: {exc}") from exc


@dataclass(frozen=True)
class ImageFolder:
    """``classes``: sorted subfolder names (empty ones included: the label set is the folder set);
    ``samples``: (path, class index) pairs, images found recursively inside each class folder."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]

    @classmethod
    def scan(cls, root: str | os.PathLike[str]) -> "ImageFolder":
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder {str(root)!r} does not exist")
        classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
        if len(classes) < 2:
            raise ValueError(f"{str(root)!r} needs at least two class subfolders (ImageFolder layout)")
        samples = tuple((p, i) for i, c in enumerate(classes) for p in list_images(root / c))
        if not samples:
            raise ValueError(f"no images under {str(root)!r}")
        return cls(root, classes, samples)

    def subset(self, n: int | None, seed: int) -> list[tuple[Path, int]]:
        """Up to ``n`` samples, balanced over classes (round robin over per-class shuffles)."""
        if n is None or n >= len(self.samples):
            return list(self.samples)
        rng = random.Random(seed)
        per_class: list[list[tuple[Path, int]]] = [[] for _ in self.classes]
        for s in self.samples:
            per_class[s[1]].append(s)
        for group in per_class:
            rng.shuffle(group)
        picked: list[tuple[Path, int]] = []
        while len(picked) < n:
            for group in per_class:
                if group and len(picked) < n:
                    picked.append(group.pop())
        return picked
