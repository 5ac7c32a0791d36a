"""Contrastive training of ``builtin:fashion-clip`` on Fashion-MNIST's training split.

``python -m adapters.zoo.fashion_train`` (or ``radapt models train fashion-clip``) retrains it and
rewrites ``weights/fashion-clip.safetensors``. Needs the dataset (``apt-get install
dataset-fashion-mnist``).

The objective is CLIP's symmetric InfoNCE with captions: per batch, each class gets one caption
(a random template over one of the class's names, the bare name among the templates); image ->
text is cross-entropy over those captions, text -> image a multi-positive cross-entropy over the
batch's images of that class (a batch holds many images per class, so one-caption-per-image
InfoNCE would push same-class pairs apart). Augmentation: horizontal flips and shifts of up to
2 px. Deterministic for a seed on one machine and thread count (seeded generators, deterministic
algorithms).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import CLIPModel

from adapters.lab.finetune import warmup_cosine
from adapters.lab.zeroshot import TEMPLATES, Normalize
from adapters.zoo import fashion, fashion_data

log = logging.getLogger(__name__)

# Names a caption may use per class (the dataset's own first; ImageFolder's folder spelling too).
ALIASES: tuple[tuple[str, ...], ...] = (
    ("T-shirt/top", "T-shirt top", "T-shirt", "top", "tee"), ("Trouser", "trousers", "pants"),
    ("Pullover", "sweater"), ("Dress",), ("Coat", "jacket"), ("Sandal", "sandals"), ("Shirt",),
    ("Sneaker", "sneakers"), ("Bag", "handbag"), ("Ankle boot", "boot", "ankle boots"),
)
TRAIN_TEMPLATES: tuple[str, ...] = TEMPLATES + (
    "{}", "{}.", "a {}.", "a picture of a {}.", "a black and white photo of a {}.", "a photo of {}.",
    "an image of a {}.", "a small photo of a {}.",
)


FINETUNE_IMAGES = 8_192  # training images the FARE / TeCoA fine-tunes see (64 batches of 128)


@dataclass(frozen=True)
class ContrastiveSettings:
    epochs: int = 6
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    seed: int = 0
    n: int | None = None  # training images (default: all 60,000)


def caption_batch(tokenizer: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One random caption per class: token ids and mask ``[10, T]``."""
    captions = []
    for names in ALIASES:
        name = names[int(torch.randint(len(names), (1,), generator=generator))]
        template = TRAIN_TEMPLATES[int(torch.randint(len(TRAIN_TEMPLATES), (1,), generator=generator))]
        captions.append(template.format(name))
    return tokenizer(captions, padding=True, return_tensors="pt")


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and shift of up to 2 px (zero fill) of ``x: [B, 3, H, W]``."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    padded = F.pad(x, (2, 2, 2, 2))
    dy, dx = (int(v) for v in torch.randint(0, 5, (2,), generator=generator))
    return padded[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, labels: torch.Tensor,
                     scale: torch.Tensor) -> torch.Tensor:
    """Symmetric loss of ``image_emb: [B, D]`` vs one caption per class ``text_emb: [C, D]``."""
    logits = scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T  # [B, C]
    image_to_text = F.cross_entropy(logits, labels)
    log_p = logits.T.log_softmax(-1)  # [C, B]: each caption over the batch's images
    positive = F.one_hot(labels, logits.shape[1]).T.float()  # [C, B]
    present = positive.sum(-1) > 0
    text_to_image = -((log_p * positive).sum(-1)[present] / positive.sum(-1)[present]).mean()
    return (image_to_text + text_to_image) / 2


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` for the block, the previous setting restored after."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def train(settings: ContrastiveSettings = ContrastiveSettings(), progress: bool = True) -> CLIPModel:
    """Train from the seeded initialisation on the training split; returns the model (eval mode)."""
    with deterministic():
        return _train(settings, progress)


def _train(settings: ContrastiveSettings, progress: bool) -> CLIPModel:
    torch.manual_seed(settings.seed)
    images, labels = fashion_data.load("train", settings.n)
    model = fashion.init_model(settings.seed).train()
    tokenizer = fashion.fashion_processor().tokenizer
    normalize = Normalize(fashion.FASHION_MEAN, fashion.FASHION_STD)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(images.shape[0] / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    sched = warmup_cosine(opt, settings.warmup_steps, total)
    gen = torch.Generator().manual_seed(settings.seed)
    started = time.time()
    for epoch in range(settings.epochs):
        order = torch.randperm(images.shape[0], generator=gen)
        running = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * settings.batch_size:(b + 1) * settings.batch_size]
            x, y = augment(images[idx], gen), labels[idx]
            tokens = caption_batch(tokenizer, gen)
            img = model.get_image_features(pixel_values=normalize(x)).pooler_output
            txt = model.get_text_features(**tokens).pooler_output
            loss = contrastive_loss(img, txt, y, model.logit_scale.exp().clamp(max=100))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach())
            if progress and (b + 1) % 50 == 0:
                log.info("epoch %d step %d/%d loss %.4f (%.0f s)", epoch, b + 1, steps_per_epoch,
                         running / (b + 1), time.time() - started)
        log.info("epoch %d done: loss %.4f, %.0f s", epoch, running / steps_per_epoch, time.time() - started)
    return model.eval()


@torch.no_grad()
def zero_shot_accuracy(model: CLIPModel, images: torch.Tensor, labels: torch.Tensor,
                       templates: Sequence[str] = ("a photo of a {}.",), batch_size: int = 500) -> float:
    """Top-1 zero-shot accuracy on ``images: [N, 3, 28, 28]`` in [0, 1] with the dataset's class names."""
    from adapters.lab.zeroshot import class_embeddings

    text = F.normalize(class_embeddings(model, fashion.fashion_processor().tokenizer, fashion_data.CLASSES,
                                        templates), dim=-1)
    normalize = Normalize(fashion.FASHION_MEAN, fashion.FASHION_STD)
    correct = 0
    for s in range(0, images.shape[0], batch_size):
        emb = model.get_image_features(pixel_values=normalize(images[s:s + batch_size])).pooler_output
        correct += int(((F.normalize(emb, dim=-1) @ text.T).argmax(-1) == labels[s:s + batch_size]).sum())
    return correct / images.shape[0]


def finetune_variant(variant: str, n: int = FINETUNE_IMAGES, seed: int = 0) -> CLIPModel:
    """Fine-tune the committed ``fashion-clip``'s vision tower into ``fashion-clip-fare``/``-tecoa``.

    ``n`` training images from the *end* of the training split (R-Adapt+ takes its 2k from the start).
    """
    from adapters.lab.finetune import FinetuneSettings, finetune
    from adapters.lab.zeroshot import class_embeddings, logit_scale_of

    method = variant.removeprefix("fashion-clip-")
    model, processor = fashion.load_variant("fashion-clip")
    images, labels = fashion_data.load("train", n, offset=60_000 - n)
    text = class_embeddings(model, processor.tokenizer, fashion_data.CLASSES) if method == "tecoa" else None
    with deterministic():
        return finetune(model, images, labels, fashion.FASHION_MEAN, fashion.FASHION_STD,
                        FinetuneSettings(method=method, seed=seed), text=text, logit_scale=logit_scale_of(model))


def main(argv: list[str] | None = None) -> int:
    d = ContrastiveSettings()
    p = argparse.ArgumentParser(description="retrain a builtin:fashion-clip variant and rewrite its committed weights")
    p.add_argument("variant", nargs="?", default="fashion-clip", choices=fashion.VARIANTS)
    p.add_argument("--epochs", type=int, default=d.epochs, help="contrastive epochs (fashion-clip only)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="(fashion-clip only)")
    p.add_argument("--lr", type=float, default=d.lr, help="(fashion-clip only)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--n", type=int, default=None,
                   help=f"training images (default: all 60,000; {FINETUNE_IMAGES} for the fine-tunes)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    if args.variant == "fashion-clip":
        model = train(ContrastiveSettings(args.epochs, args.batch_size, args.lr, seed=args.seed, n=args.n))
    else:
        model = finetune_variant(args.variant, args.n or FINETUNE_IMAGES, args.seed)
    path = fashion.save_weights(model, args.variant, vision_only=args.variant != "fashion-clip")
    saved, _ = fashion.load_variant(args.variant)
    x, y = fashion_data.load("test")
    for name, templates in (("'a photo of a {}.'", ("a photo of a {}.",)), ("bare name", ("{}",)),
                            ("8 templates", TEMPLATES)):
        print(f"test zero-shot accuracy ({name}): {zero_shot_accuracy(saved, x, y, templates):.4f}")
    print(f"wrote {path} in {time.time() - started:.0f} s ({torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
