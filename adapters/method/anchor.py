"""FRA, the Fixed Robustness Anchor: block-0 attention output blended with a fixed tensor.

``a' = (1 - alpha) * a + alpha * A`` per sample, where ``a`` is the attention output before the
residual add and ``A`` the adapter's anchor (one row per token). Samples without an anchor are
returned bit-for-bit, so standard and robust requests can share one forward pass.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from adapters.method.config import AdapterConfig


@dataclass(frozen=True, eq=False)
class Adapter:
    """One loaded adapter: its config and its anchor.

    ``anchor``: ``[tokens, dim]``; for fixed-resolution encoders in the model's token order, for
    variable-resolution ones (Qwen-VL) in raster order over the reference grid
    ``extra["grid"] = "H,W"`` (patches). Immutable: a swap replaces the object, so a batch that
    holds a reference keeps a consistent view.
    """

    config: AdapterConfig
    anchor: torch.Tensor
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Adapter":
        """The same adapter (same uid) with its anchor on ``device``."""
        anchor = self.anchor.detach().to(device=device, dtype=dtype or self.anchor.dtype)
        return Adapter(self.config, anchor, self.uid)


def blend(a: torch.Tensor, anchor: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """FRA's blend ``(1 - alpha) * a + alpha * anchor``, in ``a``'s dtype.

    ``a: [..., D]``; ``anchor`` broadcastable to ``a``; ``alpha`` a float or a tensor broadcastable
    to ``a`` (e.g. ``[k, 1, 1]`` per sample, or a 0-d tensor being trained). Differentiable in all three.
    """
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.to(a.dtype)
    return (1 - alpha) * a + alpha * anchor.to(a.dtype)


def blend_rows(a: torch.Tensor, rows: Sequence[int], anchors: torch.Tensor,
               alphas: torch.Tensor) -> torch.Tensor:
    """Blend the anchored samples of ``a: [B, ...]``.

    ``rows``: indices into ``a`` (k of them); ``anchors: [k, ...]`` (same trailing shape as ``a``);
    ``alphas: [k]``. Other rows are untouched. Differentiable in ``a``, ``anchors`` and ``alphas``.
    """
    shape = (-1,) + (1,) * (a.dim() - 1)
    mixed = blend(a[list(rows)], anchors, alphas.view(shape))
    if len(rows) == a.shape[0]:
        return mixed
    index = torch.tensor(list(rows), device=a.device)
    return a.index_copy(0, index, mixed)
