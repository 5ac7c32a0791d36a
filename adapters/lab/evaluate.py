"""Zero-shot clean and robust accuracy of standard mode and R-Adapt configurations side by side.

Every configuration is attacked through its own forward pass (filter and anchor inside it).
Robust accuracy per eps is the worst case over the attacks per sample: as in AutoAttack, each
attack runs on the samples that survived the previous ones, and a sample counts as robust only if
it is classified correctly clean and after every attack.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from adapters.lab.attacks import ATTACKS, attack
from adapters.lab.zeroshot import ZeroShotClassifier
from adapters.method.anchor import Adapter
from adapters.method.config import AdapterConfig
from adapters.method.model import RAdaptModel


@dataclass(frozen=True)
class EvalConfig:
    """One column of the comparison: a name and an adapter (``None`` = standard mode)."""

    name: str
    adapter: Adapter | None = None

    def describe(self) -> dict[str, object]:
        if self.adapter is None:
            return {"name": self.name, "mode": "standard"}
        cfg = self.adapter.config
        return {"name": self.name, "mode": "robust", "method": cfg.method, "sigma": cfg.sigma,
                "alpha": cfg.alpha, "source": cfg.source}


@dataclass
class ConfigResult:
    """Accuracies in [0, 1] of one configuration; keys of the dicts are eps in 1/255."""

    config: EvalConfig
    n: int
    clean: float
    robust: dict[float, float] = field(default_factory=dict)
    after_attack: dict[float, dict[str, float]] = field(default_factory=dict)  # cumulative, in attack order
    seconds: float = 0.0


def with_settings(adapter: Adapter, sigma: float, alpha: float) -> Adapter:
    """The same anchor under other ``sigma``/``alpha`` (a new adapter)."""
    c = adapter.config
    return Adapter(AdapterConfig(c.fingerprint, c.method, sigma, alpha, c.source, dict(c.extra)), adapter.anchor)


def comparison_configs(rmodel: RAdaptModel, adapters: Sequence[tuple[str, Adapter]],
                       source: str) -> tuple[Adapter, list[EvalConfig]]:
    """The default white adapter and the columns every eval compares: standard mode, that white
    anchor, and each ``(name, adapter)`` (checked to fit the model)."""
    from adapters.method.acquire import white_adapter

    for _, adapter in adapters:
        adapter.config.fingerprint.check_fits(rmodel.fingerprint)
    white = white_adapter(rmodel, source=source)
    configs = [EvalConfig("standard", None),
               EvalConfig(f"white sigma={white.config.sigma:g} alpha={white.config.alpha:g}", white)]
    return white, configs + [EvalConfig(f"{name} ({a.config.method})", a) for name, a in adapters]


def sweep_configs(base: Adapter, sigmas: Sequence[float], alphas: Sequence[float]) -> list[EvalConfig]:
    """One configuration per (sigma, alpha) pair over ``base``'s anchor."""
    return [EvalConfig(f"{base.config.method} sigma={s:g} alpha={a:g}", with_settings(base, s, a))
            for s, a in itertools.product(sigmas, alphas)]


def evaluate(rmodel: RAdaptModel, text: torch.Tensor, logit_scale: float, images: torch.Tensor,
             labels: torch.Tensor, configs: Sequence[EvalConfig], eps: Sequence[float],
             attacks: Sequence[str], steps: int = 100, batch_size: int = 32, seed: int = 0,
             progress: bool = True, n_target_classes: int = 9) -> list[ConfigResult]:
    """Evaluate each configuration on ``images: [N, 3, H, W]`` in [0, 1] with ``labels: [N]``.

    ``text: [C, D]`` class embeddings; ``eps`` in 1/255; ``attacks`` from ``ATTACKS``;
    ``n_target_classes`` for APGD-T (AutoAttack's 9 by default).
    """
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown or not attacks:
        raise ValueError(f"attacks must be among {', '.join(ATTACKS)}; got {list(attacks)}")
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(f"{images.shape[0]} images for {labels.shape[0]} labels")
    device = next(rmodel.model.parameters()).device
    text = text.to(device)
    batches = math.ceil(images.shape[0] / batch_size)
    results = []
    with tqdm(total=len(configs) * batches, desc="eval", disable=not progress) as bar:
        for config in configs:
            started = time.perf_counter()
            adapter = None if config.adapter is None else config.adapter.to(device)
            clf = ZeroShotClassifier(rmodel, text, logit_scale, adapter).to(device)
            correct = torch.zeros(0, dtype=torch.bool)
            robust = {e: torch.zeros(0, dtype=torch.bool) for e in eps}
            survived = {e: {a: 0 for a in attacks} for e in eps}
            for b in range(batches):
                x = images[b * batch_size:(b + 1) * batch_size].to(device)
                y = labels[b * batch_size:(b + 1) * batch_size].to(device)
                ok = _predict(clf, x) == y
                correct = torch.cat([correct, ok.cpu()])
                for e in eps:
                    mask = _attack_batch(clf, x, y, ok, e, attacks, steps, seed + b, survived[e],
                                         n_target_classes)
                    robust[e] = torch.cat([robust[e], mask.cpu()])
                bar.set_postfix(config=config.name[:24], clean=f"{correct.float().mean():.3f}")
                bar.update(1)
            n = int(correct.numel())
            results.append(ConfigResult(
                config, n, int(correct.sum()) / n, {e: int(robust[e].sum()) / n for e in eps},
                {e: {a: survived[e][a] / n for a in attacks} for e in eps},
                round(time.perf_counter() - started, 3)))
    return results


@torch.no_grad()
def _predict(clf: ZeroShotClassifier, x: torch.Tensor) -> torch.Tensor:
    return clf(x).argmax(-1)


def _attack_batch(clf: ZeroShotClassifier, x: torch.Tensor, y: torch.Tensor, ok: torch.Tensor, eps: float,
                  attacks: Sequence[str], steps: int, seed: int, survived: dict[str, int],
                  n_target_classes: int = 9) -> torch.Tensor:
    """Per-sample robustness ``[B]`` (bool): correct clean and after each attack in turn."""
    robust = ok.clone()
    for name in attacks:
        idx = robust.nonzero().flatten()
        if idx.numel() > 0 and eps > 0:
            x_adv = attack(clf, x[idx], y[idx], eps, name, steps, seed=seed, n_target_classes=n_target_classes)
            robust[idx] = _predict(clf, x_adv) == y[idx]
        survived[name] += int(robust.sum())
    return robust
