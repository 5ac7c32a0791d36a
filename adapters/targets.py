"""Where R-Adapt attaches, per model family, and the family-specific tensor plumbing.

A family knows three things about a loaded transformers model: which module first sees the
pixels (the filter wraps it), which module is block 0's attention (the anchor wraps it), and how
to turn per-sample adapters into tensors at those two places.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from adapters.anchor import Adapter, blend_rows
from adapters.config import AdapterError, AdapterMismatchError, Fingerprint
from adapters.lowpass import blur_radius, blurred_patch_conv, fold_blur_into_weight

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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


class ClipFamily(VisionFamily):
    """CLIP ViTs: ``CLIPModel``, ``CLIPVisionModel(WithProjection)`` and LLaVA's vision tower.

    Filter at the patch embedding (``pixel_values: [B, 3, H, W]``, a stride-P convolution): the
    blur is folded into that convolution's weights (``lowpass.blurred_patch_conv``), so robust mode
    costs one slightly wider patch convolution instead of a separate blur pass over every pixel.
    Anchor on block 0's ``self_attn`` output ``[B, T, D]`` (T = 1 + patches).
    """

    name = "clip"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._folded: dict[tuple[float, int, torch.dtype, torch.device], torch.Tensor] = {}

    def filter_site(self) -> tuple[nn.Module, str]:
        return self.vision.embeddings, "patch_embedding"

    def filtered_forward(self, base_layer: nn.Module, x: torch.Tensor, args: tuple, kwargs: dict,
                         state: ControlState) -> torch.Tensor:
        samples = _check_batch(state, x.shape[0])
        groups: dict[float, list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault(s.config.sigma if s is not None else 0.0, []).append(i)
        if len(groups) == 1:
            return self._patch_conv(base_layer, x, next(iter(groups)))
        parts = {sigma: self._patch_conv(base_layer, x[rows], sigma) for sigma, rows in groups.items()}
        first = next(iter(parts.values()))
        out = first.new_empty((x.shape[0], *first.shape[1:]))
        for sigma, rows in groups.items():
            out = out.index_copy(0, torch.tensor(rows, device=x.device), parts[sigma])
        return out

    def _patch_conv(self, conv: nn.Module, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """``conv(blur(x, sigma))`` with the folded weights, cached per (sigma, radius, dtype, device)."""
        if sigma <= 0:
            return conv(x)
        radius = blur_radius(sigma, x.shape[-2], x.shape[-1])
        key = (sigma, radius, conv.weight.dtype, conv.weight.device)
        if key not in self._folded:
            if len(self._folded) >= 32:  # sigmas are per adapter: a handful in practice
                self._folded.pop(next(iter(self._folded)))
            # a normal tensor even when first built in serving's inference mode: the attacks'
            # forward (autograd through robust mode) saves it for backward
            with torch.inference_mode(False), torch.no_grad():
                self._folded[key] = fold_blur_into_weight(conv.weight, sigma, radius)
        return blurred_patch_conv(x, conv, sigma, self._folded[key])

    def attention_site(self) -> tuple[nn.Module, str]:
        return self.vision.encoder.layers[0], "self_attn"

    def fingerprint(self) -> Fingerprint:
        cfg = self.vision.config
        tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1
        return Fingerprint("clip_vision_model", cfg.hidden_size, cfg.patch_size, cfg.image_size, tokens)

    def apply_anchor(self, a: torch.Tensor, state: ControlState) -> torch.Tensor:
        samples = _check_batch(state, a.shape[0])
        rows = [i for i, s in enumerate(samples) if s is not None and s.config.anchor_on]
        anchors = []
        for i in rows:
            anchor = samples[i].anchor
            if anchor.shape != a.shape[1:]:
                raise AdapterMismatchError(
                    f"anchor of shape {tuple(anchor.shape)} does not fit block-0 attention output "
                    f"{tuple(a.shape[1:])}: the image resolution differs from the adapter's")
            anchors.append(anchor.to(device=a.device, dtype=a.dtype))
        alphas = torch.tensor([samples[i].config.alpha for i in rows], device=a.device)
        return blend_rows(a, rows, torch.stack(anchors), alphas)

    def white_anchor(self, rmodel: Any) -> torch.Tensor:
        cfg = self.vision.config
        param = next(self.vision.parameters())
        pixels = self.white_pixels(cfg.image_size, cfg.image_size, param.device, param.dtype)
        captured = rmodel.capture_block0(lambda: self.vision(pixel_values=pixels))
        return captured[0]


def _check_batch(state: ControlState, n: int) -> tuple[Adapter | None, ...]:
    samples = state.samples
    assert samples is not None
    if len(samples) != n:
        raise AdapterError(f"control names {len(samples)} images but the vision batch has {n}")
    return samples


def find_family(model: nn.Module, image_mean: Sequence[float] | None = None,
                image_std: Sequence[float] | None = None) -> VisionFamily:
    """Detect the family of ``model`` and locate its vision encoder."""
    from transformers.models.clip.modeling_clip import CLIPVisionModel

    from adapters import qwen

    mean = image_mean or OPENAI_CLIP_MEAN
    std = image_std or OPENAI_CLIP_STD
    for module in model.modules():
        qwen_family = qwen.family_for(module)
        if qwen_family is not None:
            return qwen_family(model, module, mean, std)
        if isinstance(module, CLIPVisionModel):
            return ClipFamily(model, module, mean, std)
    raise AdapterError(f"no supported vision encoder in {type(model).__name__} "
                       "(supported: CLIP, LLaVA, Qwen2-VL, Qwen2.5-VL, Qwen3-VL)")
