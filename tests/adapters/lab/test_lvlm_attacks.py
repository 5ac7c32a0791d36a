import numpy as np
import pytest
import torch
from PIL import Image

from adapters import RAdaptModel
from adapters.lab.attacks import apgd_loss
from adapters.lab.lvlm_attacks import LvlmTarget, attack_example
from adapters.method.anchor import Adapter
from adapters.zoo.loading import load_model

pytestmark = pytest.mark.integration

MODELS = ["builtin:tiny-llava", "builtin:tiny-qwen2-vl", "builtin:tiny-qwen2.5-vl", "builtin:tiny-qwen3-vl"]
REFS = ["a red dog on the grass", "a dog playing outside"]


@pytest.fixture(scope="module", params=MODELS)
def target(request):
    loaded = load_model(request.param, device="cpu", dtype="float32")
    return LvlmTarget(RAdaptModel.from_loaded(loaded), loaded.processor)


def photo(seed: int = 0, size=(40, 30)) -> Image.Image:
    arr = np.random.default_rng(seed).random((size[1], size[0], 3))
    return Image.fromarray((arr * 255).astype("uint8"))


def test_pixels_in_unit_range_normalise_to_the_processors_input(target):
    img = photo()
    ex = target.example(img, "Describe the image.", REFS)
    assert ex.image.shape[0] == 1 and 0.0 <= float(ex.image.min()) and float(ex.image.max()) <= 1.0
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    text = target.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = target.processor(text=[text], images=[img], return_tensors="pt")
    torch.testing.assert_close(target.pixel_values(ex.image, ex, 1), enc["pixel_values"], atol=1e-5, rtol=0)
    assert torch.equal(ex.prompt["input_ids"], enc["input_ids"])
    # one teacher-forced row per reference, labels only on the reference (+ end of turn)
    assert ex.references == 2
    labels = ex.forced["labels"]
    assert (labels[:, :enc["input_ids"].shape[1]] == -100).all()
    for row, ref in zip(labels, REFS, strict=True):
        tokens = row[row != -100].tolist()
        assert tokens[-1] == target.eos
        assert target.tokenizer.decode(tokens, skip_special_tokens=True).strip() == ref


def test_loss_is_the_models_own_language_model_loss_of_the_reference(target):
    ex = target.example(photo(4), "Describe the image.", REFS[:1])
    forced = dict(ex.forced)
    with torch.no_grad():
        with target.rmodel.control([None]):
            expected = target.model(**forced, pixel_values=target.pixel_values(ex.image, ex, 1)).loss
        got = target.loss(ex.image, ex, None)
    torch.testing.assert_close(got, expected.reshape(1), rtol=1e-5, atol=1e-5)


def test_attack_raises_the_reference_loss_well_above_clean(target):
    ex = target.example(photo(1), "Describe the image.", REFS)
    with torch.no_grad():
        clean = float(target.loss(ex.image, ex, None))
    for name in ("apgd", "pgd"):
        adv = attack_example(target, ex, None, eps=4, attack=name, steps=10, seed=0)
        assert float((adv - ex.image).abs().max()) <= 4 / 255 + 1e-6
        assert 0.0 <= float(adv.min()) and float(adv.max()) <= 1.0
        with torch.no_grad():
            attacked = float(target.loss(adv, ex, None))
        assert attacked > clean + 0.5, (name, clean, attacked)  # nats per token: perplexity x1.6 or more
    again = attack_example(target, ex, None, eps=4, attack="apgd", steps=10, seed=0)
    assert torch.equal(again, attack_example(target, ex, None, eps=4, attack="apgd", steps=10, seed=0))


def test_gradients_reach_the_pixels_through_filter_and_anchor(target):
    rmodel = target.rmodel
    ex = target.example(photo(2), "Describe the image.", REFS[:1])
    stored = rmodel.build_adapter(rmodel.white_anchor(), method="manual")  # a stored anchor (Qwen: resampled)
    anchor = stored.anchor.clone().requires_grad_(True)
    live = Adapter(stored.config, anchor)  # same settings, an anchor that records its gradient
    grads = {}
    for name, adapter in [("standard", None), ("robust", live)]:
        x = ex.image.clone().requires_grad_(True)
        target.loss(x, ex, adapter).sum().backward()
        grads[name] = x.grad
        assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    assert anchor.grad is not None and float(anchor.grad.abs().sum()) > 0
    assert not torch.allclose(grads["standard"], grads["robust"])
    # the filter is in the differentiated path: a blurred gradient is smoother than the plain one
    def roughness(g):
        return float((g[..., 1:, :] - g[..., :-1, :]).abs().mean() / g.abs().mean())
    assert roughness(grads["robust"]) < roughness(grads["standard"])


def test_generation_depends_on_the_image(target):
    ex = target.example(photo(3), "Describe the image.", REFS)
    texts = {target.generate(x, ex, None, 6) for x in (ex.image, 1 - ex.image, ex.image.flip(-1) * 0.5)}
    assert len(texts) >= 2


@pytest.mark.unit
def test_apgd_loss_maximises_any_loss_inside_the_ball():
    torch.manual_seed(0)
    w = torch.randn(3 * 8 * 8)

    def loss(x):
        return (x.flatten(1) @ w).sin() * 3 + x.flatten(1).pow(2).sum(1)

    x = torch.rand(4, 3, 8, 8)
    state = torch.random.get_rng_state()
    adv = apgd_loss(loss, x, eps=4, steps=20, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone
    assert float((adv - x).abs().max()) <= 4 / 255 + 1e-6
    assert (loss(adv) > loss(x) + 0.5).all()
    assert torch.equal(adv, apgd_loss(loss, x, eps=4, steps=20, seed=0))
    assert torch.equal(apgd_loss(loss, x, eps=0, steps=5), x)
