"""Attack steps in the CLIP runner: the gradient equals an independent autograd computation, in
standard and robust mode, alone or in a mixed batch beside inference items."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adapters.lab.zeroshot import ZeroShotClassifier
from service.runners.base import WorkItem, WorkKind
from service.runners.clip import ClipGradient, GradientStep

LABELS = ("cat", "dog", "car", "bird")
PROMPTS = tuple(f"a photo of a {x}." for x in LABELS)


@pytest.fixture()
def served(clip_engine):
    return clip_engine.models["builtin:tiny-clip"]


def _pixels(served, seed: int) -> torch.Tensor:
    from tests.service.conftest import image_of

    return served.runner.prepare_attack(image_of(seed, (37, 29)))


def _reference(served, x: torch.Tensor, adapter, target: int | None) -> tuple[torch.Tensor, int]:
    """The gradient by adapters.lab.zeroshot's classifier and plain autograd."""
    model, tok = served.loaded.model, served.loaded.processor.tokenizer
    with torch.no_grad():
        ids = tok(list(PROMPTS), padding=True, return_tensors="pt")
        text = model.get_text_features(**ids).pooler_output
    clf = ZeroShotClassifier(served.rmodel, text, served.runner.logit_scale, adapter)
    x = x[None].clone().requires_grad_(True)
    logits = clf(x)
    y = int(logits.argmax()) if target is None else target
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([y])), [x])
    return grad[0], y


def test_prepare_attack_gives_the_model_input_in_whole_8_bit_levels(served):
    x = _pixels(served, 0)
    assert x.shape == (3, 32, 32) and x.min() >= 0 and x.max() <= 1
    assert torch.equal((x * 255).round(), x * 255)
    mean = torch.tensor(served.rmodel.family.image_mean).view(3, 1, 1)
    std = torch.tensor(served.rmodel.family.image_std).view(3, 1, 1)
    from tests.service.conftest import image_of

    torch.testing.assert_close((x - mean) / std, served.runner.preprocess(image_of(0, (37, 29))), atol=1e-5, rtol=0)


@pytest.mark.parametrize("robust", [False, True])
def test_gradient_equals_autograd_through_the_zero_shot_classifier(served, robust):
    adapters = served.adapters.snapshot()
    name = "default" if robust else None
    x = _pixels(served, 1)
    (out,) = served.runner.run_batch([WorkItem(WorkKind.GRADIENT, ClipGradient(x, PROMPTS, None), name)], adapters)
    step: GradientStep = out.value
    grad, y = _reference(served, x, adapters.get(name) if robust else None, None)
    assert step.target == y
    assert grad.abs().max() > 0  # not vacuous
    torch.testing.assert_close(step.grad, grad, atol=1e-6, rtol=1e-4)
    assert out.adapter_id == (adapters["default"].uid if robust else None)
    assert abs(sum(step.probs) - 1) < 1e-5 and len(step.probs) == len(LABELS)


def test_mixed_batch_equals_each_item_alone(served):
    adapters = served.adapters.snapshot()
    runner = served.runner
    x0, x1 = _pixels(served, 2), _pixels(served, 3)
    from tests.service.conftest import image_of

    items = [
        WorkItem(WorkKind.GRADIENT, ClipGradient(x0, PROMPTS, 2), None),
        WorkItem(WorkKind.IMAGE, runner.prepare_image(image_of(4), list(LABELS), "a photo of a {}."), "default"),
        WorkItem(WorkKind.GRADIENT, ClipGradient(x1, PROMPTS, None), "default"),
        WorkItem(WorkKind.TEXT, runner.prepare_text("a dog")),
        WorkItem(WorkKind.GRADIENT, ClipGradient(x1, PROMPTS[:2], 1), None),
    ]
    together = runner.run_batch(items, adapters)
    alone = [runner.run_batch([item], adapters)[0] for item in items]
    for t, a, item in zip(together, alone, items, strict=True):
        assert t.adapter_id == a.adapter_id
        if item.kind == WorkKind.GRADIENT:
            assert t.value.target == a.value.target
            torch.testing.assert_close(t.value.grad, a.value.grad, atol=1e-6, rtol=1e-4)
        elif item.kind == WorkKind.IMAGE:
            assert [x[0] for x in t.value] == [x[0] for x in a.value]
            assert [x[1] for x in t.value] == pytest.approx([x[1] for x in a.value], abs=1e-5)
        else:
            torch.testing.assert_close(torch.as_tensor(t.value), torch.as_tensor(a.value), atol=1e-6, rtol=1e-5)
    # the gradients differ between modes and targets: the comparison above is not vacuous
    assert not torch.allclose(together[2].value.grad, together[4].value.grad)


def test_a_removed_adapter_fails_only_its_own_step(served):
    adapters = served.adapters.snapshot()
    x = _pixels(served, 5)
    items = [WorkItem(WorkKind.GRADIENT, ClipGradient(x, PROMPTS, None), "gone"),
             WorkItem(WorkKind.GRADIENT, ClipGradient(x, PROMPTS, None), None)]
    gone, ok = served.runner.run_batch(items, adapters)
    assert isinstance(gone, Exception) and getattr(gone, "code", "") == "adapter_not_found"
    assert ok.value.grad.abs().max() > 0


def test_gradient_steps_leave_no_gradient_on_the_weights(served):
    x = _pixels(served, 6)
    served.runner.run_batch([WorkItem(WorkKind.GRADIENT, ClipGradient(x, PROMPTS, None), "default")],
                            served.adapters.snapshot())
    assert all(p.grad is None and not p.requires_grad for p in served.loaded.model.parameters())
