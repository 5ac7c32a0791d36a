import pytest
import torch
import torch.nn.functional as F

from adapters import RAdaptModel
from adapters.lab.attacks import apgd, cross_entropy_loss, linf_project, pgd
from adapters.lab.zeroshot import ZeroShotClassifier, class_embeddings, logit_scale_of
from adapters.method.acquire import white_adapter
from adapters.method.anchor import Adapter
from adapters.method.lowpass import gaussian_blur

pytestmark = pytest.mark.unit

CLASSES = ["boat", "cat", "green", "tree", "zebra"]  # varied predictions on random tiny-clip images


def classifier(loaded, adapter_fn=None):
    ip = loaded.processor.image_processor
    rmodel = RAdaptModel(loaded.model, ip.image_mean, ip.image_std)
    text = class_embeddings(loaded.model, loaded.processor.tokenizer, CLASSES, ["{}"])
    adapter = None if adapter_fn is None else adapter_fn(rmodel)
    return rmodel, ZeroShotClassifier(rmodel, text, logit_scale_of(loaded.model), adapter)


def images(n: int, seed: int = 0) -> torch.Tensor:
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    x[:, :, 0] = 0.0  # rows at the edges of [0, 1], so the clamp has work to do
    x[:, :, -1] = 1.0
    return x


def assert_in_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> None:
    e = eps / 255.0
    assert torch.all(x_adv >= torch.clamp(x - e, min=0.0)) and torch.all(x_adv <= torch.clamp(x + e, max=1.0))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert (x_adv - x).abs().max() > 0.9 * e  # it used the budget: not a vacuous pass


def test_pgd_takes_any_loss_and_projects_exactly():
    x = images(2)
    # maximising the pixel sum: one full step up, then projection and clamp, exactly
    adv = pgd(lambda z: z.sum(dim=(1, 2, 3)), x, eps=4, steps=2, step=4, random_start=False)
    assert torch.equal(adv, torch.clamp(torch.min(x + 8 / 255, x + 4 / 255), max=1.0))
    assert torch.equal(linf_project(x + 1.0, x, 4), torch.clamp(x + 4 / 255, max=1.0))
    assert_in_ball(adv, x, 4)


@pytest.mark.parametrize("robust", [False, True], ids=["standard", "white-adapter"])
def test_pgd_raises_the_loss_it_attacks(fresh_clip, robust):
    _, clf = classifier(fresh_clip, white_adapter if robust else None)
    x = images(8)
    with torch.no_grad():
        y = clf(x).argmax(-1)
    loss_fn = cross_entropy_loss(clf, y)
    with torch.no_grad():
        before = loss_fn(x)
    adv = pgd(loss_fn, x, eps=4, steps=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = loss_fn(adv)
    assert after.mean() > before.mean() + 0.05
    assert (after > before).float().mean() >= 0.75
    assert_in_ball(adv, x, 4)


def test_pgd_is_deterministic_for_a_seed(fresh_clip):
    _, clf = classifier(fresh_clip)
    x = images(2)
    y = torch.tensor([0, 1])
    runs = [pgd(cross_entropy_loss(clf, y), x, 4, steps=2, generator=torch.Generator().manual_seed(s))
            for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t"])
def test_apgd_wrapper_fools_the_standard_model_within_the_ball(fresh_clip, name):
    _, clf = classifier(fresh_clip)
    x = images(8)
    with torch.no_grad():
        y = clf(x).argmax(-1)
    adv = apgd(clf, x, y, eps=8, attack=name, steps=10)
    with torch.no_grad():
        acc = (clf(adv).argmax(-1) == y).float().mean()
    assert acc < 0.5
    assert_in_ball(adv, x, 8)


def test_apgd_rejects_unknown_attacks(fresh_clip):
    _, clf = classifier(fresh_clip)
    with pytest.raises(ValueError, match="apgd-ce or apgd-t"):
        apgd(clf, images(1), torch.tensor([0]), eps=1, attack="fab")


def input_grad(clf, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    clf(x)[:, 0].sum().backward()
    return x.grad


def test_gradient_flows_through_the_filter(fresh_clip):
    """With the anchor off, the defended gradient is exactly that of (blur, then the plain model)."""
    rmodel, defended = classifier(fresh_clip, lambda r: white_adapter(r, sigma=1.0, alpha=0.0))
    standard = ZeroShotClassifier(rmodel, defended.text, defended.logit_scale, None)
    x = images(2)
    g_defended = input_grad(defended, x)
    xb = x.clone().requires_grad_(True)
    standard(gaussian_blur(xb, 1.0))[:, 0].sum().backward()  # blur commutes with normalisation
    assert torch.allclose(g_defended, xb.grad, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(g_defended, input_grad(standard, x), atol=1e-4)


def test_gradient_flows_through_the_anchor(fresh_clip):
    rmodel, standard = classifier(fresh_clip)
    base = white_adapter(rmodel, sigma=0.0, alpha=0.5)
    leaf = base.anchor.clone().requires_grad_(True)
    defended = ZeroShotClassifier(rmodel, standard.text, standard.logit_scale, Adapter(base.config, leaf))
    x = images(2)
    g_defended = input_grad(defended, x)
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0
    assert not torch.allclose(g_defended, input_grad(standard, x), atol=1e-4)
    # and the anchor changes what the attack sees: logits differ from standard mode
    with torch.no_grad():
        assert not torch.allclose(F.softmax(defended(x), -1), F.softmax(standard(x), -1), atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_attacks_run_on_cuda_through_the_defended_forward(fresh_clip):
    fresh_clip.model.to("cuda")
    _, clf = classifier(fresh_clip, white_adapter)
    clf.to("cuda")
    x = images(4).cuda()
    with torch.no_grad():
        y = clf(x).argmax(-1)
    adv = pgd(cross_entropy_loss(clf, y), x, eps=4, steps=3, generator=torch.Generator("cuda").manual_seed(0))
    assert adv.device.type == "cuda"
    assert_in_ball(adv, x, 4)
    x_ce = apgd(clf, x, y, eps=8, attack="apgd-ce", steps=3)
    assert x_ce.device.type == "cuda" and (x_ce - x).abs().max() <= 8 / 255 + 1e-6
    assert x_ce.min() >= 0 and x_ce.max() <= 1
