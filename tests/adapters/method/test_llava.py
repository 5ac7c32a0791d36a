"""R-Adapt on LLaVA's CLIP vision tower (builtin tiny-llava): the same checks as every family."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from adapters import Adapter, AdapterMismatchError, RAdaptModel, load_adapter, save_adapter
from adapters.method.acquire import white_adapter
from adapters.zoo import vlm
from tests.helpers import gaussian_reference

pytestmark = pytest.mark.unit


def build():
    model, proc = vlm.tiny_llava()
    return model, proc


def inject(model, proc) -> RAdaptModel:
    ip = proc.image_processor
    return RAdaptModel(model, ip.image_mean, ip.image_std)


def pixels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def features(model, px: torch.Tensor) -> torch.Tensor:
    """LLaVA's projected image features ``[B, 16, D_text]`` (CLS dropped, layer -2)."""
    return torch.stack(list(model.model.get_image_features(pixel_values=px).pooler_output))


def tower(model):
    return model.model.vision_tower


def capture_block0(model, run) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    attn = tower(model).encoder.layers[0].self_attn
    handle = attn.register_forward_hook(lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o))
    try:
        run()
    finally:
        handle.remove()
    return seen[0]


def manual(r: RAdaptModel, seed: int, sigma: float, alpha: float) -> Adapter:
    g = torch.Generator().manual_seed(seed)
    return r.build_adapter(torch.randn(17, 32, generator=g), method="manual", sigma=sigma, alpha=alpha)



def test_off_reproduces_base_model_exactly():
    model, proc = build()
    px = pixels(2)
    with torch.no_grad():
        base = features(model, px)
        r = inject(model, proc)
        off = manual(r, 0, 0.0, 0.0)
        runs = [features(model, px)]
        for samples in ([None, None], [off, off]):
            with r.control(samples):
                runs.append(features(model, px))
        with r.control([white_adapter(r), None]):
            robust = features(model, px)
    assert all((run - base).abs().max() <= 1e-6 for run in runs)
    assert (robust[0] - base[0]).abs().max() > 1e-3 and torch.equal(robust[1], base[1])


def test_alpha_one_makes_block0_the_anchor():
    model, proc = build()
    r = inject(model, proc)
    adapter = manual(r, 1, 0.0, 1.0)
    with torch.no_grad(), r.control([adapter, None]):
        out = capture_block0(model, lambda: features(model, pixels(2)))
    assert torch.allclose(out[0], adapter.anchor, atol=1e-6)
    assert (out[1] - adapter.anchor).abs().max() > 1e-2


def test_filter_equals_explicit_gaussian():
    model, proc = build()
    r = inject(model, proc)
    px = pixels(1)
    with torch.no_grad():
        with r.control([manual(r, 0, 1.0, 0.0)]):  # filter only
            filtered = features(model, px)
        on_blurred = features(model, gaussian_reference(px.double(), 1.0).float())  # standard mode
        plain = features(model, px)
    assert (filtered - on_blurred).abs().max() <= 1e-5 and (filtered - plain).abs().max() > 1e-3


def test_mixed_batch_equals_one_by_one():
    model, proc = build()
    r = inject(model, proc)
    samples = [None, white_adapter(r), manual(r, 1, 0.5, 0.3), manual(r, 2, 2.0, 0.8)]
    px = pixels(4, seed=3)
    with torch.no_grad():
        with r.control(samples):
            batch = features(model, px)
        for i, s in enumerate(samples):
            with r.control([s]):
                alone = features(model, px[i:i + 1])
            assert (batch[i] - alone[0]).abs().max() <= 1e-5
        base = features(model, px)
    assert torch.equal(batch[0], base[0])
    assert all((batch[i] - base[i]).abs().max() > 1e-3 for i in range(1, 4))


def test_save_load_exact_and_mismatches_refused(tmp_path):
    model, proc = build()
    r = inject(model, proc)
    adapter = manual(r, 5, 1.0, 0.5)
    loaded = load_adapter(save_adapter(adapter, tmp_path / "a.safetensors"))
    assert torch.equal(loaded.anchor, adapter.anchor) and loaded.config == adapter.config
    px = pixels(1)
    with torch.no_grad():
        with r.control([adapter]):
            x = features(model, px)
        with r.control([loaded]):
            y = features(model, px)
    assert torch.equal(x, y)
    fp = adapter.config.fingerprint
    other_res = dataclasses.replace(fp, image_size=64, num_tokens=65)
    bigger = Adapter(dataclasses.replace(adapter.config, fingerprint=other_res), torch.zeros(65, 32))
    with pytest.raises(AdapterMismatchError, match="image_size"), r.control([bigger]):
        pass
    qwen_model, qproc = vlm.tiny_qwen2_vl()
    qr = RAdaptModel(qwen_model, qproc.image_processor.image_mean, qproc.image_processor.image_std)
    with pytest.raises(AdapterMismatchError, match="architecture"), r.control([white_adapter(qr)]):
        pass


def test_white_anchor_equals_block0_on_a_white_image():
    model, proc = build()
    fresh, _ = build()
    white = proc.image_processor(images=[Image.new("RGB", (32, 32), (255, 255, 255))],
                                 return_tensors="pt")["pixel_values"]
    vision = tower(fresh)
    with torch.no_grad():  # independent: embeddings -> pre-LN -> LN1 -> attention, by hand
        h = vision.pre_layrnorm(vision.embeddings(white))
        layer = vision.encoder.layers[0]
        expected = layer.self_attn(layer.layer_norm1(h))[0][0]
    anchor = inject(model, proc).white_anchor()
    assert anchor.shape == (17, 32) and (anchor - expected).abs().max() <= 1e-5


def test_gradients_flow_through_filter_and_anchor():
    model, proc = build()
    r = inject(model, proc)
    base = manual(r, 0, 1.0, 0.5)
    anchor = base.anchor.clone().requires_grad_(True)
    grads = []
    for samples in ([None], [Adapter(base.config, anchor)]):
        x = pixels(1).requires_grad_(True)
        with r.control(samples):
            features(model, x).square().sum().backward()
        grads.append(x.grad)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert (grads[0] - grads[1]).abs().max() > 1e-4
    assert anchor.grad is not None and anchor.grad.abs().sum() > 0


def test_generation_under_control():
    model, proc = build()
    r = inject(model, proc)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe this"}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    inputs = proc(text=[text], images=[image], return_tensors="pt")
    with torch.no_grad():
        with r.control([white_adapter(r)]):
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
            robust = features(model, inputs["pixel_values"])
        plain = features(model, inputs["pixel_values"])
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4)
    assert (robust - plain).abs().max() > 1e-3
