"""Anchor acquisition: training-free (white) and model-guided. The data-driven one is in ``train``.

Both take block-0 attention output on a uniform white image: ``white`` from the served (clean)
model itself, ``guided`` from an adversarially fine-tuned model of the same architecture (FARE,
TeCoA), whose anchor then rides on the frozen clean backbone.
"""

from __future__ import annotations

from adapters.method.anchor import Adapter
from adapters.method.config import AdapterMismatchError
from adapters.method.model import RAdaptModel


def white_adapter(rmodel: RAdaptModel, sigma: float | None = None, alpha: float | None = None,
                  source: str = "") -> Adapter:
    """Training-free adapter (R-Adapt_CLIP): one partial forward of the clean model."""
    return rmodel.build_adapter(rmodel.white_anchor(), method="white", sigma=sigma, alpha=alpha, source=source)


def guided_adapter(rmodel: RAdaptModel, robust: RAdaptModel, sigma: float | None = None,
                   alpha: float | None = None, source: str = "") -> Adapter:
    """Model-guided adapter (R-Adapt_M): the white anchor of ``robust``, checked to fit ``rmodel``."""
    if robust.fingerprint != rmodel.fingerprint:
        raise AdapterMismatchError(
            f"robust model {source or '?'} does not share the served model's architecture "
            f"({robust.fingerprint} vs {rmodel.fingerprint})")
    return rmodel.build_adapter(robust.white_anchor(), method="guided", sigma=sigma, alpha=alpha,
                                source=source)
