"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL vision encoders: variable resolution, packed patches.

The encoder takes ``pixel_values: [N, C*T*P*P]``, already normalised and patchified by the
processor, plus ``grid_thw: [images, 3]``; image ``i`` owns ``t*h*w`` consecutive rows. Inside an
image the rows run frame by frame, each frame in merge-block order (``m x m`` blocks in raster
order, raster order inside a block); Qwen2.5-VL additionally reorders merge blocks into
attention windows right after the patch embedding, so block 0 sees (and returns) the windowed
order.

- Filter: a forward pre-hook on the encoder records ``grid_thw``; each filtered image's rows are
  un-patchified to ``[t*T, C, H, W]``, blurred, and patchified back in the processor's order.
- Anchor: block 0's ``attn`` output ``[N, D]`` is blended per image. ``white`` adapters use the
  exact block-0 output on a white image of that image's grid (computed once per grid, cached);
  stored anchors (guided, data, manual) are ``[h0*w0, D]`` in raster order over the reference
  grid ``extra["grid"] = "h0,w0"``, bilinearly resampled to each image's grid and permuted into
  the model's token order.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from adapters.method.anchor import Adapter, blend
from adapters.method.config import AdapterError, AdapterMismatchError, Fingerprint
from adapters.method.family import ControlState, VisionFamily, capture_block0
from adapters.method.lowpass import gaussian_blur

REFERENCE_SIDE = 16  # reference grid of stored anchors: 16 x 16 patches (224 px at Qwen2-VL's 14 px)
WHITE_CACHE_SIZE = 64  # white anchors kept per model, one per (grid, device, dtype)

Grid = tuple[int, int, int]


class QwenFamily(VisionFamily):
    """Qwen2-VL's encoder (``Qwen2VisionTransformerPretrainedModel``); the base of the other two."""

    name = "qwen2_vl"
    variable_resolution = True

    def __init__(self, model: nn.Module, vision: nn.Module, image_mean: Any, image_std: Any) -> None:
        super().__init__(model, vision, image_mean, image_std)
        cfg = vision.config
        self.patch = int(cfg.patch_size)
        self.temporal = int(cfg.temporal_patch_size)
        self.merge = int(cfg.spatial_merge_size)
        self.channels = int(cfg.in_channels)
        self.width = int(vision.blocks[0].attn.proj.out_features)
        side = max(self.merge, REFERENCE_SIDE // self.merge * self.merge)
        self.reference_grid = (side, side)
        self._state: ControlState | None = None
        self._white: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()

    # -- sites, fingerprint, hooks -----------------------------------------------------------------
    def filter_site(self) -> tuple[nn.Module, str]:
        return self.vision, "patch_embed"

    def attention_site(self) -> tuple[nn.Module, str]:
        return self.vision.blocks[0], "attn"

    def fingerprint(self) -> Fingerprint:
        h, w = self.reference_grid
        return Fingerprint(self.vision.config.model_type, self.width, self.patch, h * self.patch, h * w,
                           variable_resolution=True)

    def install_hooks(self, state: ControlState) -> None:
        self._state = state

        def record_grid(module: nn.Module, args: tuple, kwargs: dict) -> None:
            grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
            if grid is None:
                raise AdapterError("the Qwen vision encoder was called without grid_thw")
            grids = [tuple(int(v) for v in row) for row in grid.tolist()]
            state.scratch["grid_thw"] = grids
            # White anchors are computed here, before the forward starts, so their nested forward
            # never runs inside the outer one (whose output recording it would disturb).
            if state.samples is not None and len(state.samples) == len(grids):
                param = next(self.vision.parameters())
                for sample, g in zip(state.samples, grids, strict=True):
                    if sample is not None and sample.config.anchor_on and sample.config.method == "white":
                        self.white_tokens(g, param.device, param.dtype)

        self.vision.register_forward_pre_hook(record_grid, with_kwargs=True)

    def anchor_extra(self, anchor: torch.Tensor) -> dict[str, str]:
        h, w = self.reference_grid
        if anchor.shape[0] != h * w:
            raise AdapterError(f"a stored Qwen anchor has one row per patch of the {h}x{w} reference grid "
                               f"({h * w} rows), got {anchor.shape[0]}")
        return {"grid": f"{h},{w}"}

    # -- token layout ------------------------------------------------------------------------------
    def token_order(self, grid: Grid) -> torch.Tensor:
        """For each of an image's ``t*h*w`` rows in model order, its index in frame-major raster order."""
        t, h, w = grid
        m = self.merge
        frame = torch.arange(h * w).view(h // m, m, w // m, m).permute(0, 2, 1, 3).reshape(-1)
        order = torch.cat([frame + i * h * w for i in range(t)])
        return self._window_order(order, grid)

    def _window_order(self, order: torch.Tensor, grid: Grid) -> torch.Tensor:
        return order  # Qwen2-VL and Qwen3-VL: no window reordering

    def unpatchify(self, rows: torch.Tensor, grid: Grid) -> torch.Tensor:
        """One image's ``rows: [t*h*w, C*T*P*P]`` (processor order) -> frames ``[t*T, C, h*P, w*P]``."""
        t, h, w = grid
        m, p, c, tp = self.merge, self.patch, self.channels, self.temporal
        x = rows.reshape(t, h // m, w // m, m, m, c, tp, p, p)
        x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)  # t, T, C, h/m, m, P, w/m, m, P
        return x.reshape(t * tp, c, h * p, w * p)

    def patchify(self, frames: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Inverse of ``unpatchify``: ``[t*T, C, h*P, w*P]`` -> ``[t*h*w, C*T*P*P]``."""
        t, h, w = grid
        m, p, c, tp = self.merge, self.patch, self.channels, self.temporal
        x = frames.reshape(t, tp, c, h // m, m, p, w // m, m, p)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # t, h/m, w/m, m, m, C, T, P, P
        return x.reshape(t * h * w, c * tp * p * p)

    def _segments(self, n: int, state: ControlState) -> tuple[list[Grid], list[int]]:
        grids = state.scratch.get("grid_thw")
        if grids is None:
            raise AdapterError("grid_thw was not recorded: call the Qwen vision encoder with grid_thw")
        samples = state.samples
        assert samples is not None
        if len(samples) != len(grids):
            raise AdapterError(f"control names {len(samples)} images but the vision batch has {len(grids)}")
        sizes = [t * h * w for t, h, w in grids]
        if sum(sizes) != n:
            raise AdapterError(f"grid_thw covers {sum(sizes)} patches but the encoder got {n}")
        return grids, sizes

    # -- filter ------------------------------------------------------------------------------------
    def apply_filter(self, x: torch.Tensor, state: ControlState) -> torch.Tensor:
        """``x: [N, C*T*P*P]`` packed patches; blurs each filtered image's frames with its sigma."""
        grids, sizes = self._segments(x.shape[0], state)
        parts = list(torch.split(x, sizes))
        for i, (sample, grid) in enumerate(zip(state.samples or (), grids, strict=True)):
            if sample is not None and sample.config.filter_on:
                frames = gaussian_blur(self.unpatchify(parts[i], grid), sample.config.sigma)
                parts[i] = self.patchify(frames, grid)
        return torch.cat(parts)

    # -- anchor ------------------------------------------------------------------------------------
    def apply_anchor(self, a: torch.Tensor, state: ControlState) -> torch.Tensor:
        """``a: [N, D]`` block-0 attention output, packed in model order; blends each anchored image."""
        grids, sizes = self._segments(a.shape[0], state)
        parts = list(torch.split(a, sizes))
        for i, (sample, grid) in enumerate(zip(state.samples or (), grids, strict=True)):
            if sample is not None and sample.config.anchor_on:
                anchor = self.anchor_tokens(sample, grid, a.device, a.dtype)
                parts[i] = blend(parts[i], anchor, sample.config.alpha)
        return torch.cat(parts)

    def anchor_tokens(self, adapter: Adapter, grid: Grid, device: torch.device,
                      dtype: torch.dtype) -> torch.Tensor:
        """The anchor ``[t*h*w, D]`` that ``adapter`` puts on an image of ``grid``, in model order."""
        if adapter.config.method == "white":
            return self.white_tokens(grid, device, dtype)
        raster = self.resample(adapter, grid).to(device=device, dtype=dtype)
        return raster[self.token_order(grid).to(device)]

    def resample(self, adapter: Adapter, grid: Grid) -> torch.Tensor:
        """A stored anchor bilinearly resampled to ``grid``: ``[t*h*w, D]``, frame-major raster order."""
        t, h, w = grid
        h0, w0 = self._stored_grid(adapter)
        anchor = adapter.anchor
        if (h0, w0) != (h, w):
            img = anchor.reshape(1, h0, w0, -1).permute(0, 3, 1, 2)
            img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
            anchor = img.permute(0, 2, 3, 1).reshape(h * w, -1)
        return anchor.repeat(t, 1)

    def _stored_grid(self, adapter: Adapter) -> tuple[int, int]:
        text = adapter.config.extra.get("grid", "")
        try:
            h0, w0 = (int(v) for v in text.split(","))
        except ValueError:
            raise AdapterMismatchError(f"a Qwen adapter needs extra['grid'] = 'H,W' (its anchor's patch grid); "
                                       f"got {text!r}") from None
        if h0 * w0 != adapter.anchor.shape[0] or adapter.anchor.shape[1] != self.width:
            raise AdapterMismatchError(f"anchor of shape {tuple(adapter.anchor.shape)} does not fit grid "
                                       f"{h0}x{w0} and width {self.width}")
        return h0, w0

    # -- white anchors -----------------------------------------------------------------------------
    def white_packed(self, grid: Grid, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """A normalised white image of ``grid`` as the processor packs it: ``[t*h*w, C*T*P*P]``."""
        t, h, w = grid
        frame = self.white_pixels(h * self.patch, w * self.patch, device, dtype)
        return self.patchify(frame.expand(t * self.temporal, -1, -1, -1), grid)

    @torch.no_grad()
    def white_tokens(self, grid: Grid, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Block-0 attention output on a white image of ``grid``, in model order (cached per grid)."""
        key = (grid, str(device), dtype)
        if key in self._white:
            self._white.move_to_end(key)
            return self._white[key]
        pixels = self.white_packed(grid, device, dtype)
        grid_thw = torch.tensor([grid], device=device)
        if self._state is None:
            raise AdapterError("R-Adapt is not installed on this model")
        tokens = capture_block0(self._state, lambda: self.vision(pixels, grid_thw=grid_thw)).detach()
        self._white[key] = tokens
        while len(self._white) > WHITE_CACHE_SIZE:
            self._white.popitem(last=False)
        return tokens

    def white_anchor(self, rmodel: Any) -> torch.Tensor:
        """White anchor on the reference grid, raster order: ``[h0*w0, D]``."""
        param = next(self.vision.parameters())
        grid = (1, *self.reference_grid)
        tokens = self.white_tokens(grid, param.device, param.dtype)
        raster = torch.empty_like(tokens)
        raster[self.token_order(grid).to(tokens.device)] = tokens
        return raster


class Qwen25Family(QwenFamily):
    """Qwen2.5-VL: merge blocks are reordered into attention windows before block 0."""

    name = "qwen2_5_vl"

    def _window_order(self, order: torch.Tensor, grid: Grid) -> torch.Tensor:
        from transformers.vision_utils import get_vision_window_index

        cfg = self.vision.config
        window_index, _ = get_vision_window_index(torch.tensor([grid]), self.merge, cfg.window_size, self.patch)
        unit = self.merge * self.merge
        return order.view(-1, unit)[window_index].reshape(-1)


class Qwen3Family(QwenFamily):
    """Qwen3-VL: Qwen2-VL's layout; learned position embeddings are added after the filter site."""

    name = "qwen3_vl"


def family_for(module: nn.Module) -> type | None:
    """The family class for a Qwen vision encoder module, else None."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

    if isinstance(module, Qwen2_5_VisionTransformerPretrainedModel):
        return Qwen25Family
    if isinstance(module, Qwen2VisionTransformerPretrainedModel):
        return QwenFamily
    if isinstance(module, Qwen3VLVisionModel):
        return Qwen3Family
    return None
