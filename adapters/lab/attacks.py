"""L-inf attacks: our PGD (any loss) and a thin wrapper over AutoAttack's APGD-CE / APGD-T
(and APGD on any loss, ``apgd_loss``, for the language-model attacks of ``adapters.lab.lvlm_attacks``).

Threat model: images in [0, 1], normalisation inside the model (``adapters.lab.zeroshot``), fp32,
``eps`` and step sizes given in 1/255 units. Attacks call the model they are given, so attacking
a ``ZeroShotClassifier`` that holds an adapter differentiates through R-Adapt's filter and anchor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

ATTACKS = ("apgd-ce", "apgd-t", "pgd")


def linf_project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project ``x_adv`` into ``{|x_adv - x|_inf <= eps/255} ∩ [0, 1]`` (``eps`` in 1/255)."""
    e = eps / 255.0
    return torch.min(torch.max(x_adv, x - e), x + e).clamp(0.0, 1.0)


def pgd(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float, steps: int = 10,
        step: float | None = None, random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """L-inf PGD that *maximises* ``loss_fn`` around ``x: [B, C, H, W]`` in [0, 1].

    ``loss_fn(x_adv) -> [B]`` per-sample losses (or a scalar); it may run any forward, e.g. a model
    under ``rmodel.control([...])``. ``eps`` and ``step`` in 1/255 (``step`` defaults to
    ``2.5 * eps / steps``, Madry et al.). Uniform random start, sign-gradient ascent, projection
    onto the eps-ball and [0, 1] after every step. Returns the last iterate, detached, fp32.
    Gradients reach only the input: callers' parameters accumulate nothing.
    """
    if eps < 0 or steps < 0:
        raise ValueError(f"eps and steps must be >= 0, got eps={eps}, steps={steps}")
    x = x.detach().float()
    step = madry_step(eps, steps) if step is None else step
    if random_start and eps > 0:
        noise = torch.rand(x.shape, generator=generator, device=x.device)  # generator on x's device
        x_adv = linf_project(x + (2 * noise - 1) * (eps / 255.0), x, eps)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(x_adv).sum()
        (grad,) = torch.autograd.grad(loss, [x_adv])
        x_adv = pgd_step(x_adv.detach(), grad, x, eps, step)
    return x_adv.detach()


def pgd_step(x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, eps: float, step: float) -> torch.Tensor:
    """One L-inf PGD ascent step: ``x_adv + step * sign(grad)`` projected onto the eps-ball around ``x``
    and [0, 1] (``eps`` and ``step`` in 1/255). For callers that get the gradient elsewhere (the
    engine's attack, whose gradients come from the model thread one step at a time)."""
    return linf_project(x_adv + (step / 255.0) * grad.sign(), x, eps)


def madry_step(eps: float, steps: int) -> float:
    """PGD's step size (1/255) by Madry et al.'s rule, ``2.5 * eps / steps``."""
    return 2.5 * eps / max(steps, 1)


def cross_entropy_loss(model: nn.Module, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-sample cross-entropy of ``model(x_adv): [B, C]`` against ``y: [B]``, for ``pgd``."""
    return lambda x_adv: F.cross_entropy(model(x_adv), y, reduction="none")


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, attack: str = "apgd-ce",
         steps: int = 100, seed: int = 0, n_target_classes: int = 9) -> torch.Tensor:
    """AutoAttack's APGD-CE or APGD-T (targeted DLR) on ``model: [B, 3, H, W] -> logits [B, C]``.

    ``eps`` in 1/255. As in AutoAttack's standard run: one restart, ``steps`` iterations, APGD-T
    over the ``n_target_classes`` runner-up classes (capped at ``C - 1``; it needs ``C >= 4``).
    Returns adversarial images for the samples it fooled and ``x`` for the others.
    """
    from pyautoattack.autopgd_base import APGDAttack_targeted

    x = x.detach().float()
    if attack == "apgd-ce":
        runner = _apgd_ce(model, x, eps, steps, seed)
    elif attack == "apgd-t":
        n_classes = int(model(x[:1]).shape[-1])
        if n_classes < 4:
            raise ValueError(f"apgd-t needs at least 4 classes (targeted DLR loss), got {n_classes}")
        runner = APGDAttack_targeted(model, n_target_classes=min(n_target_classes, n_classes - 1),
                                     **_apgd_common(x, eps, steps, seed))
    else:
        raise ValueError(f"attack must be apgd-ce or apgd-t, got {attack!r}")
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        adv = runner.perturb(x, y.to(x.device))  # it reseeds the global RNG: keep ours untouched
    return linf_project(adv.detach(), x, eps)


class LossAsLogits(nn.Module):
    """``x -> [0, loss_fn(x)]`` per sample: ``[B, 2]`` logits whose cross-entropy against class 0 is
    ``softplus(loss)``, a strictly increasing function of the loss. APGD's L-inf steps use the
    gradient's sign and its schedule compares loss values, so APGD-CE on these logits runs APGD on
    ``loss_fn`` itself."""

    def __init__(self, loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.loss_fn = loss_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(x).float().reshape(-1)
        return torch.stack([torch.zeros_like(loss), loss], dim=-1)


def apgd_loss(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float, steps: int = 100,
              seed: int = 0) -> torch.Tensor:
    """APGD (AutoAttack's step-size schedule and momentum, one restart) *maximising* any per-sample
    ``loss_fn(x_adv) -> [B]`` around ``x: [B, ...]`` in [0, 1]; returns the highest-loss iterate.

    The loss counterpart of ``pgd`` (e.g. a language model's teacher-forced loss of a reference
    caption). Deterministic in ``seed``; the global RNG is left as it was.
    """
    if eps < 0 or steps < 1:
        raise ValueError(f"eps must be >= 0 and steps >= 1, got eps={eps}, steps={steps}")
    x = x.detach().float()
    if eps == 0:
        return x.clone()
    runner = _apgd_ce(LossAsLogits(loss_fn), x, eps, steps, seed)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # its random start draws from the global RNG
        adv = runner.perturb(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device), best_loss=True)
    return linf_project(adv.detach(), x, eps)


def _apgd_common(x: torch.Tensor, eps: float, steps: int, seed: int) -> dict[str, object]:
    return dict(n_iter=steps, norm="Linf", n_restarts=1, eps=eps / 255.0, seed=seed, device=x.device, logger=log)


def _apgd_ce(model: nn.Module, x: torch.Tensor, eps: float, steps: int, seed: int) -> object:
    from pyautoattack.autopgd_base import APGDAttack

    return APGDAttack(model, loss="ce", **_apgd_common(x, eps, steps, seed))


def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, name: str, steps: int,
           seed: int = 0, n_target_classes: int = 9) -> torch.Tensor:
    """Adversarial images for ``x: [B, 3, H, W]`` with labels ``y: [B]`` by attack ``name``.

    ``n_target_classes``: APGD-T's runner-up classes (AutoAttack's 9; fewer is cheaper and weaker).
    """
    if name == "pgd":
        gen = torch.Generator(device=x.device).manual_seed(seed)
        return pgd(cross_entropy_loss(model, y), x, eps, steps=steps, generator=gen)
    return apgd(model, x, y, eps, attack=name, steps=steps, seed=seed, n_target_classes=n_target_classes)
