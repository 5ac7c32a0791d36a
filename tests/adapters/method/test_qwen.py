"""R-Adapt on the Qwen2-VL, Qwen2.5-VL and Qwen3-VL vision encoders (tiny builtin checkpoints).

Token layouts are checked against transformers' own position and window functions, never against
``adapters.method.qwen``'s, so a wrong permutation there cannot pass by agreeing with itself.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

from adapters import Adapter, AdapterError, AdapterMismatchError, RAdaptModel, load_adapter, save_adapter
from adapters.method import qwen
from adapters.method.acquire import white_adapter
from adapters.zoo import vlm
from tests.helpers import gaussian_reference

pytestmark = pytest.mark.unit

FAMILIES = ["tiny_qwen2_vl", "tiny_qwen2_5_vl", "tiny_qwen3_vl"]
REF = (1, 16, 16)  # the reference grid of stored anchors


def build(name: str):
    return getattr(vlm, name)()


def inject(model, processor) -> RAdaptModel:
    ip = processor.image_processor
    return RAdaptModel(model, ip.image_mean, ip.image_std)


def pil_images(sizes: list[tuple[int, int]], seed: int = 0) -> list[Image.Image]:
    """Random RGB images, ``sizes`` as (height, width)."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def packed(processor, sizes: list[tuple[int, int]], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    out = processor.image_processor(images=pil_images(sizes, seed), return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def random_packed(model, grids: list[tuple[int, int, int]], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed pixel values for any grid (the processor caps sizes at 12x12 patches)."""
    cfg = model.model.visual.config
    g = torch.Generator().manual_seed(seed)
    n = sum(t * h * w for t, h, w in grids)
    px = torch.randn(n, cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2, generator=g)
    return px, torch.tensor(grids)


def features(model, px: torch.Tensor, grid: torch.Tensor) -> list[torch.Tensor]:
    """Per-image merged vision features ``[tokens_i, D_text]``."""
    return list(model.model.get_image_features(pixel_values=px, image_grid_thw=grid).pooler_output)


def model_positions(model, grid: tuple[int, int, int]) -> torch.Tensor:
    """``[t*h*w, 2]`` (row, col) of each token of one image in block 0's order, from transformers."""
    vision = model.model.visual
    m = vision.spatial_merge_size
    grid_thw = torch.tensor([grid])
    pos = get_vision_position_ids(grid_thw, m)
    if hasattr(vision.config, "window_size") and hasattr(vision.config, "fullatt_block_indexes"):
        index, _ = get_vision_window_index(grid_thw, m, vision.config.window_size, vision.config.patch_size)
        pos = pos.view(-1, m * m, 2)[index].reshape(-1, 2)
    return pos


def capture_block0(model, run) -> torch.Tensor:
    """Output of block 0's attention module (the R-Adapt wrapper once injected) during ``run()``."""
    seen: list[torch.Tensor] = []
    handle = model.model.visual.blocks[0].attn.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        run()
    finally:
        handle.remove()
    return seen[0]



def manual(r: RAdaptModel, seed: int, sigma: float, alpha: float) -> Adapter:
    g = torch.Generator().manual_seed(seed)
    h, w = r.family.reference_grid
    return r.build_adapter(torch.randn(h * w, r.fingerprint.hidden_size, generator=g), method="manual",
                           sigma=sigma, alpha=alpha)


@pytest.mark.parametrize("name", FAMILIES)
def test_off_reproduces_base_model_exactly(name):
    model, proc = build(name)
    px, grid = packed(proc, [(32, 32), (24, 40)])
    with torch.no_grad():
        base = features(model, px, grid)
        r = inject(model, proc)
        off = manual(r, 0, sigma=0.0, alpha=0.0)
        runs = [features(model, px, grid)]
        for samples in ([None, None], [off, off]):
            with r.control(samples):
                runs.append(features(model, px, grid))
        with r.control([white_adapter(r), None]):
            robust = features(model, px, grid)
    for run in runs:
        assert all((a - b).abs().max() <= 1e-6 for a, b in zip(run, base, strict=True))
    assert (robust[0] - base[0]).abs().max() > 1e-3  # robust mode really changes image 0
    assert torch.equal(robust[1], base[1])  # and leaves the standard image bit-for-bit


@pytest.mark.parametrize("name", FAMILIES)
def test_alpha_one_makes_block0_the_resampled_anchor(name):
    model, proc = build(name)
    r = inject(model, proc)
    adapter = manual(r, 1, sigma=0.0, alpha=1.0)
    grids = [REF, (1, 6, 10)]
    px, grid = random_packed(model, grids)
    with torch.no_grad(), r.control([adapter, adapter]):
        out = capture_block0(model, lambda: features(model, px, grid))
    first, second = torch.split(out, [t * h * w for t, h, w in grids])
    pos = model_positions(model, REF)
    assert torch.allclose(first, adapter.anchor[pos[:, 0] * 16 + pos[:, 1]], atol=1e-6)
    img = adapter.anchor.reshape(1, 16, 16, -1).permute(0, 3, 1, 2)
    small = F.interpolate(img, size=(6, 10), mode="bilinear", align_corners=False)[0]
    pos = model_positions(model, (1, 6, 10))
    assert torch.allclose(second, small[:, pos[:, 0], pos[:, 1]].T, atol=1e-6)


@pytest.mark.parametrize("name", FAMILIES)
def test_white_adapter_uses_the_exact_white_anchor_of_each_grid(name):
    model, proc = build(name)
    fresh, _ = build(name)
    white = Image.new("RGB", (40, 24), (255, 255, 255))
    out = proc.image_processor(images=[white], return_tensors="pt")
    wpx, wgrid = out["pixel_values"], out["image_grid_thw"]
    assert wgrid.tolist() == [[1, 6, 10]]
    with torch.no_grad():
        expected = capture_block0(fresh, lambda: features(fresh, wpx, wgrid))
        r = inject(model, proc)
        px, grid = packed(proc, [(24, 40)], seed=3)
        plain = capture_block0(model, lambda: features(model, px, grid))
        with r.control([white_adapter(r, alpha=1.0, sigma=0.0)]):
            got = capture_block0(model, lambda: features(model, px, grid))
    assert (got - expected).abs().max() <= 1e-5
    assert (got - plain).abs().max() > 1e-3
    # Without absolute position embeddings every white patch is the same token, so block 0 returns
    # one row everywhere (Qwen2-VL, Qwen2.5-VL); Qwen3-VL's learned positions make the rows differ.
    spread = (expected - expected.mean(0)).abs().max()
    assert spread > 1e-3 if name == "tiny_qwen3_vl" else spread < 1e-5


@pytest.mark.parametrize("name", FAMILIES)
def test_white_anchor_equals_block0_on_a_white_image(name):
    model, proc = build(name)
    fresh, _ = build(name)
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    size = {"shortest_edge": 64 * 64, "longest_edge": 64 * 64}
    out = proc.image_processor(images=[white], size=size, return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [list(REF)]
    with torch.no_grad():
        block0 = capture_block0(fresh, lambda: features(fresh, out["pixel_values"], out["image_grid_thw"]))
    pos = model_positions(fresh, REF)
    expected = torch.empty_like(block0)
    expected[pos[:, 0] * 16 + pos[:, 1]] = block0
    anchor = inject(model, proc).white_anchor()
    assert anchor.shape == (256, model.model.visual.blocks[0].attn.proj.out_features)
    assert (anchor - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("name", FAMILIES)
def test_filter_equals_explicit_gaussian_of_the_unpatchified_image(name):
    model, proc = build(name)
    ip = proc.image_processor
    r = inject(model, proc)
    g = torch.Generator().manual_seed(0)
    image = torch.randn(3, 24, 40, generator=g)

    def patchify(img: torch.Tensor) -> torch.Tensor:  # the processor's own patchify
        rows, _, _ = ip.patchify(img.numpy(), ip.patch_size, ip.merge_size, ip.temporal_patch_size)
        return torch.from_numpy(np.ascontiguousarray(rows))

    px, grid = patchify(image), torch.tensor([[1, 6, 10]])
    seen: list[torch.Tensor] = []
    base_layer = model.model.visual.patch_embed.base_layer
    handle = base_layer.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        with torch.no_grad(), r.control([manual(r, 0, sigma=1.5, alpha=0.0)]):
            features(model, px, grid)
    finally:
        handle.remove()
    expected = patchify(gaussian_reference(image[None].double(), 1.5)[0].float())
    assert (seen[0] - expected).abs().max() <= 1e-5
    assert (seen[0] - px).abs().max() > 0.1


@pytest.mark.parametrize("name", FAMILIES)
def test_mixed_batch_equals_one_by_one(name):
    model, proc = build(name)
    r = inject(model, proc)
    a = manual(r, 1, sigma=0.5, alpha=0.3)
    b = manual(r, 2, sigma=2.0, alpha=0.8)
    samples = [None, white_adapter(r), a, b, a]
    grids = [(1, 8, 8), (1, 6, 10), (1, 4, 4), (1, 12, 8), (2, 4, 6)]  # the last: two frames
    px, grid = random_packed(model, grids, seed=5)
    rows = torch.split(px, [t * h * w for t, h, w in grids])
    with torch.no_grad():
        with r.control(samples):
            batch = features(model, px, grid)
        for i, sample in enumerate(samples):
            with r.control([sample]):
                (alone,) = features(model, rows[i], grid[i:i + 1])
            assert (batch[i] - alone).abs().max() <= 1e-5
        base = features(model, px, grid)
    assert torch.equal(batch[0], base[0])
    assert all((batch[i] - base[i]).abs().max() > 1e-3 for i in range(1, 5))
    assert (batch[2][:4] - batch[4][:4]).abs().max() > 1e-3  # images differ, not a constant output


@pytest.mark.parametrize("name", FAMILIES)
def test_save_load_is_exact(name, tmp_path):
    model, proc = build(name)
    r = inject(model, proc)
    adapter = manual(r, 4, sigma=1.0, alpha=0.6)
    loaded = load_adapter(save_adapter(adapter, tmp_path / "a.safetensors"))
    assert torch.equal(loaded.anchor, adapter.anchor) and loaded.config == adapter.config
    assert loaded.config.extra["grid"] == "16,16" and loaded.config.fingerprint.variable_resolution
    px, grid = packed(proc, [(24, 40)])
    with torch.no_grad():
        with r.control([adapter]):
            x = features(model, px, grid)
        with r.control([loaded]):
            y = features(model, px, grid)
    assert torch.equal(x[0], y[0])


def test_adapters_for_another_architecture_are_refused():
    built = {name: build(name) for name in FAMILIES}
    rmodels = {name: inject(*pair) for name, pair in built.items()}
    adapters = {name: manual(r, 0, 1.0, 0.5) for name, r in rmodels.items()}
    for name, r in rmodels.items():
        for other, adapter in adapters.items():
            if other == name:
                with r.control([adapter]):
                    pass
            else:
                with pytest.raises(AdapterMismatchError, match="architecture"):
                    with r.control([adapter]):
                        pass
    llava, lproc = vlm.tiny_llava()
    clip_adapter = white_adapter(RAdaptModel(llava))
    with pytest.raises(AdapterMismatchError, match="architecture"):
        with rmodels["tiny_qwen2_vl"].control([clip_adapter]):
            pass


def test_stored_anchor_needs_a_consistent_grid():
    model, proc = build("tiny_qwen2_vl")
    r = inject(model, proc)
    good = manual(r, 0, 0.0, 1.0)
    px, grid = packed(proc, [(32, 32)])
    for extra in ({"grid": "8,8"}, {}):
        bad = Adapter(dataclasses.replace(good.config, extra=extra), good.anchor)
        with pytest.raises(AdapterMismatchError, match="grid"), r.control([bad]):
            features(model, px, grid)
    with pytest.raises(AdapterError, match="reference grid"):
        r.build_adapter(torch.zeros(17, 32), method="manual")
    with pytest.raises(AdapterError, match="control names 2 images"), r.control([good, good]):
        features(model, px, grid)


@pytest.mark.parametrize("name", FAMILIES)
def test_gradients_flow_through_filter_and_anchor(name):
    model, proc = build(name)
    r = inject(model, proc)
    base = manual(r, 0, sigma=1.0, alpha=0.5)
    anchor = base.anchor.clone().requires_grad_(True)
    adapter = Adapter(base.config, anchor)
    px, grid = packed(proc, [(24, 40)])
    grads = []
    for samples in ([None], [adapter]):
        x = px.clone().requires_grad_(True)
        with r.control(samples):
            features(model, x, grid)[0].square().sum().backward()
        grads.append(x.grad)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert (grads[0] - grads[1]).abs().max() > 1e-4  # the attack sees the defended model
    assert anchor.grad is not None and anchor.grad.abs().sum() > 0  # data-driven anchors can train


@pytest.mark.parametrize("name", FAMILIES)
def test_generation_under_control(name):
    model, proc = build(name)
    r = inject(model, proc)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is this"}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    inputs = proc(text=[text], images=pil_images([(24, 40)], seed=7), return_tensors="pt")
    robust = white_adapter(r)
    with torch.no_grad():
        with r.control([robust]):
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
            feats = features(model, inputs["pixel_values"], inputs["image_grid_thw"])
        plain = features(model, inputs["pixel_values"], inputs["image_grid_thw"])
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4)
    assert (feats[0] - plain[0]).abs().max() > 1e-3


def test_white_anchors_are_cached_and_bounded(monkeypatch):
    monkeypatch.setattr(qwen, "WHITE_CACHE_SIZE", 2)
    model, proc = build("tiny_qwen2_vl")
    r = inject(model, proc)
    family = r.family
    first = family.white_tokens((1, 4, 4), torch.device("cpu"), torch.float32)
    assert family.white_tokens((1, 4, 4), torch.device("cpu"), torch.float32) is first
    for grid in [(1, 4, 6), (1, 6, 4), (1, 8, 8)]:
        family.white_tokens(grid, torch.device("cpu"), torch.float32)
    assert len(family._white) == 2
    again = family.white_tokens((1, 4, 4), torch.device("cpu"), torch.float32)
    assert again is not first and torch.equal(again, first)
