"""CLIP ViTs as an R-Adapt family: ``CLIPModel``, ``CLIPVisionModel(WithProjection)`` and LLaVA's
vision tower."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from adapters.method.anchor import blend_rows
from adapters.method.config import AdapterMismatchError, Fingerprint
from adapters.method.family import ControlState, VisionFamily, check_batch
from adapters.method.lowpass import blur_radius, blurred_patch_conv, fold_blur_into_weight

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
        samples = check_batch(state, x.shape[0])
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
        samples = check_batch(state, a.shape[0])
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
