"""fashion-clip's contrastive training: the loss rewards alignment, and a run repeats exactly."""

import pytest
import torch

from adapters.zoo import fashion, fashion_data
from adapters.zoo.fashion_train import ALIASES, ContrastiveSettings, caption_batch, contrastive_loss, train

pytestmark = pytest.mark.unit


def test_the_loss_is_lower_for_aligned_embeddings():
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(10, 16, generator=gen)
    labels = torch.arange(40) % 10
    aligned = text[labels] + 0.1 * torch.randn(40, 16, generator=gen)
    shuffled = aligned[torch.randperm(40, generator=gen)]
    scale = torch.tensor(10.0)
    assert contrastive_loss(aligned, text, labels, scale) < contrastive_loss(shuffled, text, labels, scale) - 1


def test_one_caption_per_class_with_the_class_name():
    tokenizer = fashion.fashion_processor().tokenizer
    batch = caption_batch(tokenizer, torch.Generator().manual_seed(0))
    assert batch["input_ids"].shape[0] == len(fashion_data.CLASSES) == len(ALIASES)
    texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    assert any(a.lower() in texts[9].lower() for a in ALIASES[9])


def test_training_changes_the_weights_and_repeats_exactly(fake_dataset):
    settings = ContrastiveSettings(epochs=1, batch_size=4, warmup_steps=1, n=8)
    first, second = train(settings, progress=False), train(settings, progress=False)
    init = fashion.init_model().state_dict()
    a, b = first.state_dict(), second.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sum(not torch.equal(a[k], init[k]) for k in a if a[k].is_floating_point()) > 10
    assert not torch.are_deterministic_algorithms_enabled()  # the global setting is restored
