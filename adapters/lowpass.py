"""GIF, the Gaussian Input Filter: a separable, per-channel Gaussian blur inside the forward pass.

The blur is linear with weights that sum to one and uses reflect padding, so it commutes with a
per-channel affine normalisation: it may run on normalised pixel values. Everything here is
differentiable, so attacks see the filtered model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def kernel_radius(sigma: float) -> int:
    """``kernel_size = 2 * radius + 1`` with ``radius = ceil(3 * sigma)``."""
    return int(math.ceil(3.0 * sigma))


def gaussian_kernel1d(sigma: float, radius: int | None = None, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, shape ``[2 * radius + 1]``."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = kernel_radius(sigma) if radius is None else radius
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur ``images: [B, C, H, W]`` with one ``sigma`` (pixels); ``sigma <= 0`` returns the input.

    The radius is capped at ``min(H, W) - 1`` (reflect padding needs it); the taps are then
    renormalised, which only matters for images smaller than the kernel.
    """
    if sigma <= 0:
        return images
    b, c, h, w = images.shape
    radius = min(kernel_radius(sigma), h - 1, w - 1)
    if radius <= 0:
        return images
    k = gaussian_kernel1d(sigma, radius, dtype=images.dtype, device=images.device)
    size = k.numel()
    x = images.reshape(b * c, 1, h, w)
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, size))
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, size, 1))
    return x.reshape(b, c, h, w)


def blur_per_sample(images: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Blur each sample of ``images: [B, C, H, W]`` with its own sigma (``0`` = untouched).

    Samples that share a sigma are blurred in one call; untouched samples are returned
    bit-for-bit.
    """
    if len(sigmas) != images.shape[0]:
        raise ValueError(f"{len(sigmas)} sigmas for a batch of {images.shape[0]}")
    groups: dict[float, list[int]] = {}
    for i, s in enumerate(sigmas):
        if s > 0:
            groups.setdefault(float(s), []).append(i)
    if not groups:
        return images
    if len(groups) == 1 and len(next(iter(groups.values()))) == images.shape[0]:
        return gaussian_blur(images, next(iter(groups)))
    out = images.clone()
    for s, idx in groups.items():
        index = torch.tensor(idx, device=images.device)
        out = out.index_copy(0, index, gaussian_blur(images.index_select(0, index), s))
    return out
