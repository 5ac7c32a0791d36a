"""Independent references the tests compare the library against."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_reference(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A full 2-D Gaussian kernel built pixel by pixel, reflect padding, one grouped conv2d.

    ``images: [B, C, H, W]``; written independently of ``adapters.method.lowpass`` (which is separable).
    """
    r = math.ceil(3 * sigma)
    coords = torch.arange(-r, r + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    k2 = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    k2 = (k2 / k2.sum()).to(images.dtype)
    c = images.shape[1]
    padded = F.pad(images, (r, r, r, r), mode="reflect")
    return F.conv2d(padded, k2.expand(c, 1, 2 * r + 1, 2 * r + 1).contiguous(), groups=c)
