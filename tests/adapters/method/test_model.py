"""Exactness of R-Adapt on CLIP (tiny-clip): identity when off, anchor semantics, mixed batches."""

import pytest
import torch

from adapters import AdapterError, AdapterMismatchError, RAdaptModel
from adapters.method.acquire import white_adapter
from adapters.method.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from adapters.method.lowpass import gaussian_blur

pytestmark = pytest.mark.unit


def images(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def image_features(model, px: torch.Tensor) -> torch.Tensor:
    return model.get_image_features(pixel_values=px).pooler_output


def inject(loaded) -> RAdaptModel:
    ip = loaded.processor.image_processor
    return RAdaptModel(loaded.model, ip.image_mean, ip.image_std)


def block0_attention(model, px: torch.Tensor) -> torch.Tensor:
    """Independent computation of block-0 attention output on an un-injected CLIPModel."""
    vision = model.vision_model
    h = vision.pre_layrnorm(vision.embeddings(px))
    layer = vision.encoder.layers[0]
    return layer.self_attn(layer.layer_norm1(h))[0]


def test_off_reproduces_base_model_exactly(fresh_clip):
    px = images(3)
    with torch.no_grad():
        base = image_features(fresh_clip.model, px)
        r = inject(fresh_clip)
        plain = image_features(fresh_clip.model, px)
        off = r.build_adapter(r.white_anchor(), sigma=0.0, alpha=0.0)
        with r.control([None, None, None]):
            none = image_features(fresh_clip.model, px)
        with r.control([off, off, off]):
            zero = image_features(fresh_clip.model, px)
        robust = white_adapter(r)
        with r.control([robust, robust, robust]):
            on = image_features(fresh_clip.model, px)
    for out in (plain, none, zero):
        assert (out - base).abs().max() <= 1e-6
    assert (on - base).abs().max() > 1e-3  # robust mode really changes the output


def test_alpha_one_makes_block0_attention_the_anchor(fresh_clip):
    r = inject(fresh_clip)
    anchor = torch.randn(17, 32)
    adapter = r.build_adapter(anchor, method="manual", sigma=0.0, alpha=1.0)
    seen = []
    attn = fresh_clip.model.vision_model.encoder.layers[0].self_attn
    handle = attn.register_forward_hook(lambda m, i, o: seen.append(o[0]))
    with torch.no_grad(), r.control([adapter, None]):
        image_features(fresh_clip.model, images(2))
    handle.remove()
    out = seen[0]
    assert torch.allclose(out[0], anchor, atol=1e-6)
    assert not torch.allclose(out[1], anchor, atol=1e-2)


def test_filter_runs_inside_the_forward(fresh_clip):
    px = images(1)
    with torch.no_grad():
        base_on_blurred = image_features(fresh_clip.model, gaussian_blur(px, 1.5))
        r = inject(fresh_clip)
        filter_only = r.build_adapter(r.white_anchor(), sigma=1.5, alpha=0.0)
        with r.control([filter_only]):
            got = image_features(fresh_clip.model, px)
    assert torch.allclose(got, base_on_blurred, atol=1e-5)


def test_mixed_batch_equals_per_sample_runs(fresh_clip):
    r = inject(fresh_clip)
    white = white_adapter(r)
    other = r.build_adapter(torch.randn(17, 32), method="manual", sigma=2.0, alpha=0.3)
    plan = [None, white, other, white, None]
    px = images(5, seed=3)
    with torch.no_grad():
        with r.control(plan):
            mixed = image_features(fresh_clip.model, px)
        singles = []
        for i, adapter in enumerate(plan):
            with r.control([adapter]):
                singles.append(image_features(fresh_clip.model, px[i:i + 1]))
    assert torch.allclose(mixed, torch.cat(singles), atol=1e-5)
    assert not torch.allclose(mixed[1], mixed[2], atol=1e-3)


def test_white_anchor_equals_independent_block0_on_white_image(fresh_clip):
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    white = (torch.ones(1, 3, 32, 32) - mean) / std
    with torch.no_grad():
        expected = block0_attention(fresh_clip.model, white)[0]
        also_via_processor = fresh_clip.processor(images=[_white_pil()], return_tensors="pt")["pixel_values"]
        assert torch.allclose(also_via_processor, white, atol=1e-5)
        anchor = inject(fresh_clip).white_anchor()
    assert anchor.shape == (17, 32)
    assert torch.allclose(anchor, expected, atol=1e-6)
    assert anchor.std(0).abs().sum() > 0  # tokens differ (position embeddings): not a degenerate anchor


def _white_pil():
    from PIL import Image

    return Image.new("RGB", (48, 40), (255, 255, 255))


def test_gradients_flow_through_filter_and_anchor(fresh_clip):
    r = inject(fresh_clip)
    adapter = r.build_adapter(r.white_anchor().requires_grad_(True), sigma=1.0, alpha=0.5)
    anchor = adapter.anchor.requires_grad_(True)
    px = images(2).requires_grad_(True)
    with r.control([adapter, None]):
        image_features(fresh_clip.model, px).square().sum().backward()
    assert px.grad is not None and px.grad[0].abs().sum() > 0 and px.grad[1].abs().sum() > 0
    assert anchor.grad is not None and anchor.grad.abs().sum() > 0


def test_injection_is_refused_twice_and_checks_batch_size(fresh_clip):
    r = inject(fresh_clip)
    with pytest.raises(AdapterError):
        inject(fresh_clip)
    with pytest.raises(AdapterError), r.control([white_adapter(r)]):
        image_features(fresh_clip.model, images(2))


def test_adapter_for_another_resolution_is_refused(fresh_clip):
    r = inject(fresh_clip)
    from dataclasses import replace

    fp = replace(r.fingerprint, image_size=64, num_tokens=65)
    adapter = white_adapter(r)
    alien = type(adapter)(replace(adapter.config, fingerprint=fp), torch.zeros(65, 32))
    with pytest.raises(AdapterMismatchError, match="image_size"), r.control([alien]):
        pass
