"""Adapter configuration: plain frozen data, no tensors.

Defaults (ours; the paper does not publish its values, see DESIGN.md section 1):
- ``sigma = 1.0`` pixel of the model's input. A 7-tap Gaussian (kernel ``2*ceil(3*sigma)+1``)
  halves the response at about 0.19 cycles/pixel and passes the low frequencies that carry a
  CLIP embedding's content; L-inf attacks put most of their energy at the highest frequencies.
- ``alpha = 0.5``: block-0 attention is half its own output, half the anchor. Robust models make
  block-0 attention input-insensitive; 0.5 removes half of block-0's sensitivity to the input
  while leaving the deeper, frozen layers a signal they were trained on.
Both are per adapter; ``radapt eval --sweep`` tunes them on a user's data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

FORMAT_VERSION = 1
DEFAULT_SIGMA = 1.0
DEFAULT_ALPHA = 0.5
METHODS = ("white", "guided", "data", "manual")


class AdapterError(ValueError):
    """An adapter file or configuration that cannot be used (bad file, bad values)."""


class AdapterMismatchError(AdapterError):
    """An adapter built for another architecture or resolution than the model it is loaded into."""


@dataclass(frozen=True)
class Fingerprint:
    """What an anchor fits.

    ``num_tokens`` and ``image_size`` describe the anchor's own grid. Fixed-resolution encoders
    (CLIP) must match them exactly; variable-resolution ones (Qwen-VL) resample the anchor to each
    image's grid, so only architecture, hidden size and patch size must match.
    """

    architecture: str
    hidden_size: int
    patch_size: int
    image_size: int
    num_tokens: int
    variable_resolution: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Fingerprint":
        try:
            data = json.loads(text)
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise AdapterError(f"adapter fingerprint is not valid: {exc}") from exc

    def check_fits(self, model: "Fingerprint") -> None:
        """Raise AdapterMismatchError unless an anchor with this fingerprint fits ``model``."""
        keys = ["architecture", "hidden_size", "patch_size"]
        if not model.variable_resolution:
            keys += ["image_size", "num_tokens"]
        diffs = [
            f"{k}: adapter {getattr(self, k)!r} vs model {getattr(model, k)!r}"
            for k in keys
            if getattr(self, k) != getattr(model, k)
        ]
        if diffs:
            raise AdapterMismatchError(
                "adapter was built for a different model (" + "; ".join(diffs) + "); "
                "build one for this model with `radapt adapter build`"
            )


@dataclass(frozen=True)
class AdapterConfig:
    """R-Adapt settings of one adapter. ``sigma = 0`` turns the filter off, ``alpha = 0`` the anchor."""

    fingerprint: Fingerprint
    method: str = "white"
    sigma: float = DEFAULT_SIGMA
    alpha: float = DEFAULT_ALPHA
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.sigma >= 0.0 and self.sigma <= 16.0):
            raise AdapterError(f"sigma must be in [0, 16] pixels, got {self.sigma}")
        if not (0.0 <= self.alpha <= 1.0):
            raise AdapterError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.method not in METHODS:
            raise AdapterError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")

    @property
    def filter_on(self) -> bool:
        return self.sigma > 0.0

    @property
    def anchor_on(self) -> bool:
        return self.alpha > 0.0
