"""FARE / TeCoA fine-tuning: only the vision tower moves, and a run repeats exactly."""

import pytest
import torch

from adapters.lab.finetune import FinetuneSettings, finetune
from adapters.lab.zeroshot import class_embeddings

pytestmark = pytest.mark.unit

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _run(loaded, method: str, images, labels, text=None):
    state = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    settings = FinetuneSettings(method=method, eps=4, steps=2, epochs=2, batch_size=8, lr=1e-2, warmup_steps=1)
    model = finetune(loaded.model, images, labels, MEAN, STD, settings, text=text)
    return state, model.state_dict()


@pytest.mark.parametrize("method", ["fare", "tecoa"])
def test_only_the_vision_tower_changes_and_runs_repeat_exactly(fresh_clip, method):
    from adapters.zoo.loading import load_model

    gen = torch.Generator().manual_seed(0)
    images, labels = torch.rand(16, 3, 32, 32, generator=gen), torch.arange(16) % 4
    text = class_embeddings(fresh_clip.model, fresh_clip.processor.tokenizer, ["cat", "dog", "car", "bird"], ("{}",))
    before, after = _run(fresh_clip, method, images, labels, text)
    vision = [k for k in before if k.startswith(("vision_model.", "visual_projection."))
              and before[k].is_floating_point()]
    others = [k for k in before if k not in vision]
    assert sum(not torch.equal(before[k], after[k]) for k in vision) > len(vision) // 2
    assert all(torch.equal(before[k], after[k]) for k in others)
    assert not any(p.requires_grad for p in fresh_clip.model.parameters())
    again = load_model("builtin:tiny-clip", device="cpu", dtype="float32")
    _, repeat = _run(again, method, images, labels, text)
    assert all(torch.equal(after[k], repeat[k]) for k in vision)


def test_tecoa_needs_labels_and_text(fresh_clip):
    with pytest.raises(ValueError, match="TeCoA needs labels"):
        finetune(fresh_clip.model, torch.rand(4, 3, 32, 32), None, MEAN, STD, FinetuneSettings(method="tecoa"))
    with pytest.raises(ValueError, match="method must be"):
        FinetuneSettings(method="trades")
