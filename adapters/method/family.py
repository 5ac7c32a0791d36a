"""The base types every vision family builds on: the per-forward control state, the family
interface, and the one block-0 capture mechanism.

A family knows three things about a loaded transformers model: which module first sees the
pixels (the filter wraps it), which module is block 0's attention (the anchor wraps it), and how
to turn per-sample adapters into tensors at those two places. Families (``clip``, ``qwen``) import
this module and nothing of each other; ``model`` picks one and injects it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from adapters.method.anchor import Adapter
from adapters.method.config import AdapterError, Fingerprint


class ControlState:
    """Per-forward control shared by the two wrappers of one model.

    ``samples`` is ``None`` outside ``RAdaptModel.control`` (pure pass-through); inside it is one
    entry per image of the vision batch: an ``Adapter`` or ``None`` (standard mode).
    ``scratch`` holds what a family learns during the forward (e.g. Qwen's ``grid_thw``).
    """

    def __init__(self) -> None:
        self.samples: tuple[Adapter | None, ...] | None = None
        self.scratch: dict[str, Any] = {}

    @property
    def any_filter(self) -> bool:
        return self.samples is not None and any(s is not None and s.config.filter_on for s in self.samples)

    @property
    def any_anchor(self) -> bool:
        return self.samples is not None and any(s is not None and s.config.anchor_on for s in self.samples)


class VisionFamily:
    """Base class. Subclasses name the sites and implement ``apply_filter`` and ``apply_anchor``."""

    name = "base"
    variable_resolution = False

    def __init__(self, model: nn.Module, vision: nn.Module, image_mean: Sequence[float],
                 image_std: Sequence[float]) -> None:
        self.model = model
        self.vision = vision
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)

    # sites: (parent module, attribute name)
    def filter_site(self) -> tuple[nn.Module, str]:
        raise NotImplementedError

    def attention_site(self) -> tuple[nn.Module, str]:
        raise NotImplementedError

    def fingerprint(self) -> Fingerprint:
        raise NotImplementedError

    def apply_filter(self, x: torch.Tensor, state: ControlState) -> torch.Tensor:
        """The filter site's input with each sample blurred by its own sigma."""
        raise NotImplementedError

    def filtered_forward(self, base_layer: nn.Module, x: torch.Tensor, args: tuple, kwargs: dict,
                         state: ControlState) -> Any:
        """The filter site's output for input ``x`` with the filter applied (default: blur, then call)."""
        return base_layer(self.apply_filter(x, state), *args, **kwargs)

    def apply_anchor(self, a: torch.Tensor, state: ControlState) -> torch.Tensor:
        raise NotImplementedError

    def white_anchor(self, rmodel: Any) -> torch.Tensor:
        """Block-0 attention output on a uniform white image, in this family's stored layout."""
        raise NotImplementedError

    def anchor_extra(self, anchor: torch.Tensor) -> dict[str, str]:
        """Metadata an anchor of this family needs besides the fingerprint (Qwen: its grid)."""
        return {}

    def install_hooks(self, state: ControlState) -> None:
        """Extra hooks a family needs (Qwen records ``grid_thw``). Default: none."""

    def white_pixels(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """A normalised white image ``[1, 3, H, W]``: per channel ``(1 - mean) / std``."""
        values = torch.tensor([(1.0 - m) / s for m, s in zip(self.image_mean, self.image_std, strict=True)],
                              dtype=torch.float32)
        return values.view(1, 3, 1, 1).expand(1, 3, height, width).to(device=device, dtype=dtype).contiguous()


def check_batch(state: ControlState, n: int) -> tuple[Adapter | None, ...]:
    samples = state.samples
    assert samples is not None
    if len(samples) != n:
        raise AdapterError(f"control names {len(samples)} images but the vision batch has {n}")
    return samples



class _Captured(Exception):
    """Stops a forward once block 0 has been seen."""


def capture_block0(state: ControlState, run: Callable[[], Any]) -> torch.Tensor:
    """Block-0 attention output (before any anchor) of ``run()`` in standard mode, stopping there.

    The one capture mechanism of the package: ``AnchoredAttention`` calls ``state.scratch["capture"]``.
    Safe inside another forward of the same model (Qwen's per-grid white anchors are computed from
    a pre-hook): the caller's ``samples`` and ``scratch`` are saved and restored around ``run()``.
    Returns e.g. ``[B, T, D]`` (CLIP) or ``[N, D]`` (Qwen's packed tokens).
    """
    seen: list[torch.Tensor] = []

    def capture(a: torch.Tensor) -> None:
        seen.append(a)
        raise _Captured

    saved_samples, saved_scratch = state.samples, dict(state.scratch)
    state.samples = None
    state.scratch["capture"] = capture
    try:
        run()
    except _Captured:
        pass
    finally:
        state.samples = saved_samples
        state.scratch.clear()
        state.scratch.update(saved_scratch)
    if not seen:
        raise AdapterError("the forward never reached block 0's attention")
    return seen[0]
