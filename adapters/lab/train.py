"""The data-driven anchor (R-Adapt+): optimise the anchor on unlabelled images.

*Ours* (the paper publishes no recipe): FARE's unsupervised objective
``min_A E_x max_{|d|_inf <= eps} || f_A(x + d) - f_0(x) ||^2`` where ``f_A`` is the frozen model
with R-Adapt (filter + anchor ``A``) and ``f_0`` the clean encoder, both giving the image
embedding. Inner max: our PGD (default 10 steps of 1/255, eps 4/255); outer min: AdamW on ``A``
only (optionally ``alpha`` too), starting from the training-free white anchor. Deterministic for
a seed: shuffles and PGD starts come from seeded generators.

The FARE attacked step is written once, over any embedding function: ``fare_loss``,
``fare_pgd`` (inner max) and ``fare_attacked_loss`` (the loss at the maximiser, differentiable in
the embedding's parameters), so a FARE fine-tune of a whole encoder can reuse it.
For LLaVA the features compared are, by default, the layer -2 patch tokens its language model
reads (``TrainSettings.features``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from adapters.lab.attacks import pgd
from adapters.lab.zeroshot import Normalize, image_embeddings
from adapters.method.anchor import Adapter, blend
from adapters.method.config import DEFAULT_ALPHA, DEFAULT_SIGMA, AdapterConfig, AdapterError
from adapters.method.model import RAdaptModel

FEATURES = ("auto", "pooled", "lvlm")


@dataclass(frozen=True)
class TrainSettings:
    """Training settings; ``eps`` and ``step`` in 1/255 units.

    ``features``: what ``f`` in the FARE loss compares. ``pooled``: the image embedding (CLIP: the
    projected one; LLaVA: the tower's pooled last layer). ``lvlm``: the patch tokens the language
    model reads (LLaVA: ``vision_feature_layer``, -2, without CLS). ``auto``: ``lvlm`` for LLaVA,
    ``pooled`` otherwise.
    """

    eps: float = 4.0
    steps: int = 10
    step: float = 1.0
    epochs: int = 2
    lr: float = 1e-2
    batch_size: int = 32
    seed: int = 0
    train_alpha: bool = False
    weight_decay: float = 0.0
    features: str = "auto"

    def __post_init__(self) -> None:
        if self.eps < 0 or self.steps < 0 or self.step < 0:
            raise AdapterError("--eps, --steps and the PGD step must be >= 0")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise AdapterError("--epochs and --batch-size must be >= 1 and --lr > 0")
        if self.features not in FEATURES:
            raise AdapterError(f"--features takes {', '.join(FEATURES)}; got {self.features!r}")


Embed = Callable[[torch.Tensor], torch.Tensor]


def fare_loss(embed: Embed, x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per-sample FARE loss ``|| embed(x) - clean ||^2``: ``[B]``.

    ``embed: [B, 3, H, W] -> [B, D]`` or ``[B, T, D]`` (tokens: squared L2 per token, mean over tokens).
    """
    d = (embed(x) - clean).pow(2).sum(-1)
    return d.flatten(1).mean(-1) if d.dim() > 1 else d


def fare_pgd(embed: Embed, x: torch.Tensor, clean: torch.Tensor, settings: TrainSettings,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """FARE's inner max: PGD (``settings.eps/steps/step``) on ``fare_loss`` around ``x: [B, 3, H, W]``."""
    return pgd(partial(fare_loss, embed, clean=clean), x, settings.eps, settings.steps, settings.step,
               generator=generator)


def fare_attacked_loss(embed: Embed, x: torch.Tensor, clean: torch.Tensor, settings: TrainSettings,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample FARE loss at the PGD maximiser around ``x``: ``[B]``, differentiable in ``embed``'s
    parameters (the anchor here; a whole encoder for a FARE fine-tune), not in ``x``.

    ``clean: embed_0(x)`` of the reference (clean) encoder, computed by the caller without grad.
    """
    return fare_loss(embed, fare_pgd(embed, x, clean, settings, generator), clean)


class FareObjective:
    """``f_0`` and ``f_A`` of one injected model on [0, 1] images ``x: [B, 3, H, W]``."""

    def __init__(self, rmodel: RAdaptModel, features: str = "auto") -> None:
        if rmodel.family.variable_resolution:
            raise AdapterError("data-driven anchors need a fixed-resolution (CLIP-family) vision encoder")
        self.rmodel = rmodel
        self.device = next(rmodel.model.parameters()).device
        self.normalize = Normalize(rmodel.family.image_mean, rmodel.family.image_std).to(self.device)
        lvlm_layer = getattr(rmodel.model.config, "vision_feature_layer", None)
        if features == "auto":
            features = "pooled" if lvlm_layer is None else "lvlm"
        if features == "lvlm" and lvlm_layer is None:
            raise AdapterError("--features lvlm needs an LVLM with a vision_feature_layer (LLaVA)")
        self.features = features

    def embed(self, x: torch.Tensor, adapter: Adapter | None) -> torch.Tensor:
        """Features (fp32) in standard mode when ``adapter`` is None: ``[B, D]`` (pooled) or
        ``[B, T, D]`` (lvlm: the patch tokens the language model reads)."""
        with self.rmodel.control(None if adapter is None else [adapter] * x.shape[0]):
            if self.features == "lvlm":
                return lvlm_patch_features(self.rmodel.model, self.normalize(x)).float()
            return image_embeddings(self.rmodel.model, self.normalize(x)).float()

    def attacked_loss(self, x: torch.Tensor, adapter: Adapter, settings: TrainSettings,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample FARE loss at the PGD maximiser around ``x``: ``[B]`` (with grad to the anchor)."""
        x = x.to(self.device)
        with torch.no_grad():
            clean = self.embed(x, None)
        return fare_attacked_loss(partial(self.embed, adapter=adapter), x, clean, settings, generator)


def lvlm_patch_features(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The vision tokens a LLaVA model feeds its projector: ``[B, T, D]`` from normalised
    ``pixel_values: [B, 3, H, W]`` (``vision_feature_layer``, CLS dropped for the ``default`` strategy)."""
    cfg = model.config
    tower = getattr(model, "vision_tower", None) or model.model.vision_tower
    hidden = tower(pixel_values=pixel_values, output_hidden_states=True).hidden_states
    layers = cfg.vision_feature_layer
    out = torch.cat([hidden[i] for i in layers], dim=-1) if isinstance(layers, list) else hidden[layers]
    return out[:, 1:] if cfg.vision_feature_select_strategy == "default" else out


@torch.no_grad()
def attacked_fare_loss(rmodel: RAdaptModel, adapter: Adapter, images: torch.Tensor,
                       settings: TrainSettings = TrainSettings(), batch_size: int = 64) -> float:
    """Mean attacked FARE loss of ``adapter`` on ``images: [N, 3, H, W]`` (seeded PGD starts)."""
    objective = FareObjective(rmodel, settings.features)
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
    objective = FareObjective(rmodel, settings.features)
    settings = replace(settings, features=objective.features)  # recorded resolved
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
    loss = objective.attacked_loss(x, live, settings, noise).mean()
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
    g.add_argument("--features", choices=FEATURES, default=d.features,
                   help="features the loss compares: pooled image embedding, or lvlm = the patch tokens "
                        "a LLaVA model reads (layer -2); auto (default) = lvlm for LLaVA, pooled otherwise")


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(eps=args.eps, steps=args.steps, epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size, seed=args.seed, train_alpha=args.train_alpha,
                         features=args.features)


def load_training_images(folder: str, image_processor: Any, n: int | None, seed: int) -> torch.Tensor:
    """Up to ``n`` images from ``folder`` (recursive), ``[N, 3, H, W]`` in [0, 1]."""
    from adapters.lab.imagefolder import list_images, load_pixels, sample_paths

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
