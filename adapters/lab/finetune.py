"""Adversarial fine-tuning of a CLIP vision tower: the robust baselines R-Adapt is compared with.

- **FARE** (Schlarmann et al. 2024, unsupervised): ``min_θ E_x max_{|d| <= eps}
  || f_θ(x + d) - f_0(x) ||²``, ``f_0`` the frozen original image encoder: keeps the clean
  embeddings, so every downstream use of them (zero-shot, retrieval, a VLM) keeps working.
- **TeCoA** (Mao et al. 2023, supervised): ``min_θ E_(x,y) max_d CE(s · norm(f_θ(x + d)) @ T.T, y)``
  with ``T: [C, D]`` the frozen text embeddings of the class names: adversarial training with
  the zero-shot head as the classifier.

Both: the inner max by our PGD (``adapters.lab.attacks.pgd``: random start, sign steps), the outer
min by AdamW on the vision tower and its projection only (the text tower stays frozen, so
text embeddings and caches are shared with the clean model). Images in [0, 1], normalisation
inside. Deterministic for a seed (seeded shuffles and PGD starts).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from adapters.lab.attacks import pgd
from adapters.lab.zeroshot import Normalize, image_embeddings

log = logging.getLogger(__name__)

METHODS = ("fare", "tecoa")
VISION_PREFIXES = ("vision_model.", "visual_projection.")


@dataclass(frozen=True)
class FinetuneSettings:
    """``eps`` and ``step`` in 1/255; ``eps=4`` is FARE^4 / TeCoA^4 of the robust-CLIP protocol."""

    method: str = "fare"
    eps: float = 4.0
    steps: int = 10
    step: float = 1.0
    epochs: int = 1
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.eps < 0 or self.steps < 1 or self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("eps >= 0, steps, epochs and batch_size >= 1 and lr > 0 are required")


def vision_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters: the vision tower and its projection (everything else is frozen)."""
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(VISION_PREFIXES))
        if p.requires_grad:
            params.append(p)
    if not params:
        raise ValueError(f"{type(model).__name__} has no {' / '.join(VISION_PREFIXES)} parameters")
    return params


def warmup_cosine(opt: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``total_steps`` (per ``step()``)."""

    def factor(step: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        return min(1.0, (step + 1) / warmup_steps) * cosine

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def fare_loss(embed: Callable[[torch.Tensor], torch.Tensor], clean: torch.Tensor,
              x: torch.Tensor) -> torch.Tensor:
    """Per-sample ``|| embed(x) - clean ||²``: ``[B]``."""
    return (embed(x) - clean).pow(2).sum(-1)


def tecoa_loss(embed: Callable[[torch.Tensor], torch.Tensor], text: torch.Tensor, scale: float,
               labels: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample zero-shot cross-entropy ``[B]`` against unit-norm ``text: [C, D]``."""
    logits = scale * F.normalize(embed(x), dim=-1) @ text.T
    return F.cross_entropy(logits, labels, reduction="none")


def finetune(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, mean: tuple[float, ...],
             std: tuple[float, ...], settings: FinetuneSettings, text: torch.Tensor | None = None,
             logit_scale: float = 100.0) -> nn.Module:
    """Fine-tune ``model``'s vision tower in place on ``images: [N, 3, H, W]`` in [0, 1].

    FARE needs no labels; TeCoA needs ``labels: [N]`` and the class embeddings ``text: [C, D]``.
    Returns ``model`` (eval mode, parameters frozen again).
    """
    if settings.method == "tecoa" and (labels is None or text is None):
        raise ValueError("TeCoA needs labels and the class text embeddings")
    normalize = Normalize(mean, std)
    params = vision_parameters(model)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return image_embeddings(model, normalize(x)).float()

    frozen = None
    if settings.method == "fare":
        import copy

        frozen = copy.deepcopy(model).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
    unit_text = None if text is None else F.normalize(text.detach().float(), dim=-1)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    per_epoch = math.ceil(images.shape[0] / settings.batch_size)
    total = settings.epochs * per_epoch
    sched = warmup_cosine(opt, settings.warmup_steps, total)
    shuffle = torch.Generator().manual_seed(settings.seed)
    noise = torch.Generator().manual_seed(settings.seed + 1)
    started = time.time()
    model.eval()  # CLIP has no dropout or batch norm: train and eval forwards are the same
    for epoch in range(settings.epochs):
        order = torch.randperm(images.shape[0], generator=shuffle)
        running = 0.0
        for b in range(per_epoch):
            idx = order[b * settings.batch_size:(b + 1) * settings.batch_size]
            x = images[idx]
            if frozen is not None:
                with torch.no_grad():
                    clean = image_embeddings(frozen, normalize(x)).float()
                loss_fn = partial(fare_loss, embed, clean)
            else:
                loss_fn = partial(tecoa_loss, embed, unit_text, logit_scale, labels[idx])
            x_adv = pgd(loss_fn, x, settings.eps, settings.steps, settings.step, generator=noise)
            loss = loss_fn(x_adv).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach())
            if (b + 1) % 10 == 0:
                log.info("%s epoch %d step %d/%d loss %.4f (%.0f s)", settings.method, epoch, b + 1, per_epoch,
                         running / (b + 1), time.time() - started)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
