"""Inject R-Adapt into a frozen transformers model and control it per sample.

    rmodel = RAdaptModel(model, image_mean=..., image_std=...)
    white = rmodel.build_adapter(rmodel.white_anchor(), method="white")
    with rmodel.control([white, None]):      # one entry per image: an Adapter or None
        feats = model.get_image_features(pixel_values=pixels)

Injection wraps two modules (the one that first sees the pixels and block 0's attention) and
keeps each original as ``base_layer``. Outside ``control`` both wrappers pass through, so the
model computes exactly what it computed before injection.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from adapters.method.anchor import Adapter
from adapters.method.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ClipFamily
from adapters.method.config import DEFAULT_ALPHA, DEFAULT_SIGMA, AdapterConfig, AdapterError
from adapters.method.digest import weights_digest
from adapters.method.family import ControlState, VisionFamily, capture_block0
from adapters.method.qwen import family_for


class _Wrapper(nn.Module):
    """Keeps the original module as ``base_layer``; attributes the host model reads fall through to it."""

    def __init__(self, base_layer: nn.Module, family: VisionFamily, state: ControlState) -> None:
        super().__init__()
        self.base_layer = base_layer
        self._family = family
        self._state = state

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":
                raise
            return getattr(self.base_layer, name)


class FilteredInput(_Wrapper):
    """Wraps the module that first sees the pixels; blurs per sample before it."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self._state.any_filter:
            return self._family.filtered_forward(self.base_layer, x, args, kwargs, self._state)
        return self.base_layer(x, *args, **kwargs)


class AnchoredAttention(_Wrapper):
    """Wraps block 0's attention; blends its output with each sample's anchor."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.base_layer(*args, **kwargs)
        hook = self._state.scratch.get("capture")
        if hook is not None:
            hook(out[0] if isinstance(out, tuple) else out)
        if not self._state.any_anchor:
            return out
        if isinstance(out, tuple):
            return (self._family.apply_anchor(out[0], self._state), *out[1:])
        return self._family.apply_anchor(out, self._state)


class RAdaptModel:
    """A frozen model with R-Adapt injected. Holds no adapters: callers pass them per forward."""

    def __init__(self, model: nn.Module, image_mean: Sequence[float] | None = None,
                 image_std: Sequence[float] | None = None) -> None:
        if any(isinstance(m, (FilteredInput, AnchoredAttention)) for m in model.modules()):
            raise AdapterError("R-Adapt is already injected into this model")
        self.model = model
        self.family = find_family(model, image_mean, image_std)
        self.state = ControlState()
        for p in model.parameters():
            p.requires_grad_(False)
        parent, attr = self.family.filter_site()
        setattr(parent, attr, FilteredInput(getattr(parent, attr), self.family, self.state))
        parent, attr = self.family.attention_site()
        setattr(parent, attr, AnchoredAttention(getattr(parent, attr), self.family, self.state))
        self.family.install_hooks(self.state)
        # architecture plus a digest of the weights an anchor depends on (computed once, here)
        first, block0 = getattr(*self.family.filter_site()), self.family.attention_site()[0]
        self.fingerprint = dataclasses.replace(self.family.fingerprint(), weights=weights_digest([first, block0]))

    @classmethod
    def from_loaded(cls, loaded: Any) -> "RAdaptModel":
        """Inject into a ``LoadedModel``, normalising as its image processor does."""
        ip = getattr(loaded.processor, "image_processor", None)
        return cls(loaded.model, getattr(ip, "image_mean", None), getattr(ip, "image_std", None))

    @contextlib.contextmanager
    def control(self, samples: Sequence[Adapter | None] | None) -> Iterator[None]:
        """Run the forwards inside with one adapter (or None = standard mode) per image."""
        if samples is not None:
            for s in samples:
                if s is not None:
                    s.config.fingerprint.check_fits(self.fingerprint)
        previous = self.state.samples
        self.state.samples = None if samples is None else tuple(samples)
        try:
            yield
        finally:
            self.state.samples = previous

    def capture_block0(self, run: Callable[[], Any]) -> torch.Tensor:
        """Block-0 attention output of ``run()`` (standard mode), stopping the forward there."""
        return capture_block0(self.state, run)

    @torch.no_grad()
    def white_anchor(self) -> torch.Tensor:
        """Training-free anchor: block-0 attention output on a uniform white image (fp32, CPU)."""
        return self.family.white_anchor(self).detach().float().cpu()

    def build_adapter(self, anchor: torch.Tensor, method: str = "white", sigma: float | None = None,
                      alpha: float | None = None, source: str = "", extra: dict[str, str] | None = None) -> Adapter:
        """An adapter for this model from an anchor tensor (defaults from ``adapters.method.config``)."""
        config = AdapterConfig(
            fingerprint=self.fingerprint, method=method,
            sigma=DEFAULT_SIGMA if sigma is None else float(sigma),
            alpha=DEFAULT_ALPHA if alpha is None else float(alpha),
            source=source, extra=dict(extra or {}) | self.family.anchor_extra(anchor),
        )
        return Adapter(config, anchor.detach().float().cpu().contiguous())


def find_family(model: nn.Module, image_mean: Sequence[float] | None = None,
                image_std: Sequence[float] | None = None) -> VisionFamily:
    """Detect the family of ``model`` and locate its vision encoder."""
    from transformers.models.clip.modeling_clip import CLIPVisionModel


    mean = image_mean or OPENAI_CLIP_MEAN
    std = image_std or OPENAI_CLIP_STD
    for module in model.modules():
        qwen_family = family_for(module)
        if qwen_family is not None:
            return qwen_family(model, module, mean, std)
        if isinstance(module, CLIPVisionModel):
            return ClipFamily(model, module, mean, std)
    raise AdapterError(f"no supported vision encoder in {type(model).__name__} "
                       "(supported: CLIP, LLaVA, Qwen2-VL, Qwen2.5-VL, Qwen3-VL)")
