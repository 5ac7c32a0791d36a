"""The data-driven anchor (R-Adapt+): optimise the anchor on unlabelled images.

*Ours* (the paper publishes no recipe): FARE's unsupervised objective
``min_A E_x max_{|d|_inf <= eps} || f_A(x + d) - f_0(x) ||^2`` where ``f_A`` is the frozen model
with R-Adapt (filter + anchor ``A``) and ``f_0`` the clean encoder, both giving the image
embedding. Inner max: our PGD (default 10 steps of 1/255, eps 4/255); outer min: AdamW on ``A``
only (optionally ``alpha`` too), starting from the training-free white anchor. Deterministic for
a seed: shuffles and PGD starts come from seeded generators.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from adapters.anchor import Adapter, blend
from adapters.attacks import pgd
from adapters.config import DEFAULT_ALPHA, DEFAULT_SIGMA, AdapterConfig, AdapterError
from adapters.model import RAdaptModel
from adapters.zeroshot import Normalize, image_embeddings


@dataclass(frozen=True)
class TrainSettings:
    """Training settings; ``eps`` and ``step`` in 1/255 units."""

    eps: float = 4.0
    steps: int = 10
    step: float = 1.0
    epochs: int = 2
    lr: float = 1e-2
    batch_size: int = 32
    seed: int = 0
    train_alpha: bool = False
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.eps < 0 or self.steps < 0 or self.step < 0:
            raise AdapterError("--eps, --steps and the PGD step must be >= 0")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise AdapterError("--epochs and --batch-size must be >= 1 and --lr > 0")


class FareObjective:
    """``f_0`` and ``f_A`` of one injected model on [0, 1] images ``x: [B, 3, H, W]``."""

    def __init__(self, rmodel: RAdaptModel) -> None:
        if rmodel.family.variable_resolution:
            raise AdapterError("data-driven anchors need a fixed-resolution (CLIP-family) vision encoder")
        self.rmodel = rmodel
        self.device = next(rmodel.model.parameters()).device
        self.normalize = Normalize(rmodel.family.image_mean, rmodel.family.image_std).to(self.device)

    def embed(self, x: torch.Tensor, adapter: Adapter | None) -> torch.Tensor:
        """Image embeddings ``[B, D]`` (fp32), standard mode when ``adapter`` is None."""
        with self.rmodel.control(None if adapter is None else [adapter] * x.shape[0]):
            return image_embeddings(self.rmodel.model, self.normalize(x)).float()

    def loss(self, x: torch.Tensor, clean: torch.Tensor, adapter: Adapter) -> torch.Tensor:
        """Per-sample ``|| f_A(x) - clean ||^2``: ``[B]``."""
        return (self.embed(x, adapter) - clean).pow(2).sum(-1)

    def attacked_loss(self, x: torch.Tensor, adapter: Adapter, settings: TrainSettings,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample FARE loss at the PGD maximiser around ``x``: ``[B]`` (detached)."""
        x = x.to(self.device)
        with torch.no_grad():
            clean = self.embed(x, None)
        x_adv = pgd(partial(self.loss, clean=clean, adapter=adapter), x, settings.eps, settings.steps,
                    settings.step, generator=generator)
        with torch.no_grad():
            return self.loss(x_adv, clean, adapter)


@torch.no_grad()
def attacked_fare_loss(rmodel: RAdaptModel, adapter: Adapter, images: torch.Tensor,
                       settings: TrainSettings = TrainSettings(), batch_size: int = 64) -> float:
    """Mean attacked FARE loss of ``adapter`` on ``images: [N, 3, H, W]`` (seeded PGD starts)."""
    objective = FareObjective(rmodel)
    gen = torch.Generator(device=objective.device).manual_seed(settings.seed)
    total = 0.0
    for start in range(0, images.shape[0], batch_size):
        total += float(objective.attacked_loss(images[start:start + batch_size], adapter, settings, gen).sum())
    return total / images.shape[0]


def train_anchor(rmodel: RAdaptModel, images: torch.Tensor, settings: TrainSettings = TrainSettings(),
                 sigma: float | None = None, alpha: float | None = None, source: str = "",
                 progress: bool = True, start: torch.Tensor | None = None,
                 extra: dict[str, str] | None = None) -> Adapter:
    """Optimise an anchor on ``images: [N, 3, H, W]`` in [0, 1]; returns a ``method="data"`` adapter.

    Starts from ``start`` (default: the white anchor). ``alpha`` is trained too when
    ``settings.train_alpha`` (kept in (0, 1) by a sigmoid). The settings and the first/last epoch's
    mean loss go into the adapter's metadata as ``train.*``, along with ``extra``.
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise AdapterError(f"expected images [N, 3, H, W] with N >= 1, got {tuple(images.shape)}")
    objective = FareObjective(rmodel)
    sigma = DEFAULT_SIGMA if sigma is None else float(sigma)
    alpha0 = DEFAULT_ALPHA if alpha is None else float(alpha)
    init = rmodel.white_anchor() if start is None else start.detach().float().cpu()
    anchor = torch.nn.Parameter(init.clone().to(objective.device))
    params = [anchor]
    alpha_logit = None
    if settings.train_alpha:
        a = min(max(alpha0, 1e-3), 1 - 1e-3)
        alpha_logit = torch.nn.Parameter(torch.tensor(math.log(a / (1 - a)), device=objective.device))
        params.append(alpha_logit)
    # With a trained alpha the wrappers see alpha = 0 (filter only) and a hook blends instead.
    config = AdapterConfig(rmodel.fingerprint, "data", sigma, 0.0 if settings.train_alpha else alpha0)
    live = Adapter(config, anchor)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    shuffle = torch.Generator().manual_seed(settings.seed)
    noise = torch.Generator(device=objective.device).manual_seed(settings.seed)
    n = images.shape[0]
    batches = math.ceil(n / settings.batch_size)
    losses: list[float] = []
    with _trainable_blend(rmodel, live, anchor, alpha_logit), \
            tqdm(total=settings.epochs * batches, desc="anchor", disable=not progress) as bar:
        for _ in range(settings.epochs):
            order = torch.randperm(n, generator=shuffle)
            for b in range(batches):
                x = images[order[b * settings.batch_size:(b + 1) * settings.batch_size]]
                losses.append(_step(objective, live, x.to(objective.device), settings, noise, opt))
                bar.update(1)
                bar.set_postfix(loss=f"{sum(losses[-batches:]) / len(losses[-batches:]):.4g}")
    final_alpha = alpha0 if alpha_logit is None else float(torch.sigmoid(alpha_logit.detach()))
    meta = {f"train.{k}": str(v) for k, v in asdict(settings).items()}
    meta |= {"train.images": str(n), "train.loss_first_epoch": f"{_mean(losses[:batches]):.6g}",
             "train.loss_last_epoch": f"{_mean(losses[-batches:]):.6g}"} | dict(extra or {})
    return rmodel.build_adapter(anchor.detach().cpu(), method="data", sigma=sigma, alpha=final_alpha,
                                source=source, extra=meta)


def _step(objective: FareObjective, live: Adapter, x: torch.Tensor, settings: TrainSettings,
          noise: torch.Generator, opt: torch.optim.Optimizer) -> float:
    """One AdamW step on the attacked FARE loss of ``x: [B, 3, H, W]``; returns the batch loss."""
    with torch.no_grad():
        clean = objective.embed(x, None)
    x_adv = pgd(partial(objective.loss, clean=clean, adapter=live), x, settings.eps, settings.steps,
                settings.step, generator=noise)
    loss = objective.loss(x_adv, clean, live).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)


@contextlib.contextmanager
def _trainable_blend(rmodel: RAdaptModel, live: Adapter, anchor: torch.Tensor,
                     alpha_logit: torch.Tensor | None) -> Iterator[None]:
    """While training alpha: blend block-0 attention with a differentiable alpha for ``live``'s forwards."""
    if alpha_logit is None:
        yield
        return
    parent, attr = rmodel.family.attention_site()

    def blend_hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        samples = rmodel.state.samples
        if not samples or samples[0] is not live:
            return None
        a = output[0] if isinstance(output, tuple) else output
        mixed = blend(a, anchor, torch.sigmoid(alpha_logit))
        return (mixed, *output[1:]) if isinstance(output, tuple) else mixed

    handle = getattr(parent, attr).register_forward_hook(blend_hook)
    try:
        yield
    finally:
        handle.remove()


# --- CLI: `radapt adapter build --method data` -------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``radapt adapter build --method data``."""
    d = TrainSettings()
    g = parser.add_argument_group("data method (R-Adapt+)")
    g.add_argument("--images", help="folder of unlabelled images, read recursively")
    g.add_argument("--n", type=int, default=2000, help="images to use (default 2000; all if fewer)")
    g.add_argument("--eps", type=float, default=d.eps, help=f"PGD radius in 1/255 (default {d.eps:g})")
    g.add_argument("--steps", type=int, default=d.steps, help=f"PGD steps (default {d.steps})")
    g.add_argument("--epochs", type=int, default=d.epochs, help=f"passes over the images (default {d.epochs})")
    g.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr:g})")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of image sampling, shuffles, PGD starts")
    g.add_argument("--train-alpha", action="store_true", help="optimise alpha along with the anchor")


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(eps=args.eps, steps=args.steps, epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size, seed=args.seed, train_alpha=args.train_alpha)


def load_training_images(folder: str, image_processor: Any, n: int | None, seed: int) -> torch.Tensor:
    """Up to ``n`` images from ``folder`` (recursive), ``[N, 3, H, W]`` in [0, 1]."""
    from adapters.imagefolder import list_images, load_pixels, sample_paths

    try:
        paths = list_images(folder)
    except FileNotFoundError as exc:
        raise AdapterError(str(exc)) from exc
    if not paths:
        raise AdapterError(f"no images found under {folder!r}")
    try:
        return load_pixels(sample_paths(paths, n, seed), image_processor)
    except ValueError as exc:
        raise AdapterError(str(exc)) from exc


def build_from_args(rmodel: RAdaptModel, loaded: Any, args: argparse.Namespace,
                    progress: bool = True) -> Adapter:
    """``radapt adapter build --method data``: read the images, train, return the adapter."""
    if not args.images:
        raise AdapterError("--method data needs --images DIR (a folder of unlabelled images)")
    if args.n is not None and args.n < 1:
        raise AdapterError("--n must be >= 1")
    settings = settings_from_args(args)
    processor = getattr(loaded.processor, "image_processor", loaded.processor)
    images = load_training_images(args.images, processor, args.n, args.seed)
    return train_anchor(rmodel, images, settings, sigma=args.sigma, alpha=args.alpha,
                        source=f"data:{args.model}", progress=progress,
                        extra={"train.folder": str(Path(args.images).resolve())})
