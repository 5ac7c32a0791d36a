"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL vision encoders (variable resolution, packed patches)."""

from __future__ import annotations

from torch import nn


def family_for(module: nn.Module) -> type | None:
    """The family class for a Qwen vision encoder module, else None."""
    return None
