"""Adapter configuration: plain frozen data, no tensors.

Defaults (ours; the paper does not publish its values, see DESIGN.md section 1):
- ``sigma = 1.0`` pixel of the model's input. A 7-tap Gaussian (kernel ``2*ceil(3*sigma)+1``)
  halves the response at about 0.19 cycles/pixel and passes the low frequencies that carry a
  CLIP embedding's content. Perturbations crafted without the filter (transfer attacks, the
  usual L-inf PGD on the bare model) put most of their energy at high frequencies and lose most
  of it; an adaptive attack that differentiates through the filter moves its energy to the
  frequencies the filter passes (an adaptive PGD keeps ~38% of its energy after the blur), so
  the filter alone is no defence against it.
- ``alpha = 0.5``: block-0 attention output is half its own value, half the anchor. That halves
  the input sensitivity of the attention branch only: block 0's residual stream and MLP still see
  the input in full. Robust models make block-0 attention input-insensitive; 0.5 leaves the
  deeper, frozen layers a signal they were trained on.
Both are per adapter; ``radapt eval --sweep`` tunes them on a user's data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

FORMAT_VERSION = 1
# sigma's range: at 8 px the kernel is 49 px wide and passes nothing above ~0.02 cycles/px; a
# model's own input further bounds it to (image_size - 1) / 6, where the kernel covers the image
MAX_SIGMA = 8.0
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
    # digest of the weights the anchor depends on (adapters.method.digest); "" = unknown (older files).
    # Not part of equality: it says which checkpoint, the other fields which architecture.
    weights: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, str) or not self.architecture:
            raise AdapterError(f"fingerprint architecture must be a name, got {self.architecture!r}")
        for key in ("hidden_size", "patch_size", "image_size", "num_tokens"):
            value = getattr(self, key)
            if type(value) is not int or not 0 < value <= 1_000_000:
                raise AdapterError(f"fingerprint {key} must be a positive integer, got {value!r}")
        if type(self.variable_resolution) is not bool or not isinstance(self.weights, str):
            raise AdapterError("fingerprint variable_resolution must be true/false and weights a string")

    @property
    def max_sigma(self) -> float:
        """The largest sigma that makes sense on this model's input (the kernel spans the image)."""
        return min(MAX_SIGMA, (self.image_size - 1) / 6.0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Fingerprint":
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            return cls(**data)
        except AdapterError:
            raise
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
        if not (self.sigma >= 0.0 and self.sigma <= MAX_SIGMA):
            raise AdapterError(f"sigma must be in [0, {MAX_SIGMA:g}] pixels, got {self.sigma}")
        if self.sigma > self.fingerprint.max_sigma:
            raise AdapterError(f"sigma {self.sigma} is too wide for {self.fingerprint.image_size} px inputs "
                               f"(at most {self.fingerprint.max_sigma:.2f}: the kernel would exceed the image)")
        if not (0.0 <= self.alpha <= 1.0):
            raise AdapterError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.method not in METHODS:
            raise AdapterError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not isinstance(self.source, str) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.extra.items()):
            raise AdapterError("source and extra metadata must be strings")

    def grid(self) -> tuple[int, int]:
        """The reference patch grid ``extra["grid"] = "H,W"`` of a variable-resolution anchor."""
        text = self.extra.get("grid", "")
        try:
            h, w = (int(v) for v in text.split(","))
        except ValueError:
            raise AdapterError(f"a variable-resolution adapter needs extra grid 'H,W' (its anchor's patch grid), "
                               f"got {text!r}") from None
        if not (0 < h <= 4096 and 0 < w <= 4096):
            raise AdapterError(f"adapter grid {h}x{w} must be positive (and at most 4096 per side)")
        return h, w

    @property
    def filter_on(self) -> bool:
        return self.sigma > 0.0

    @property
    def anchor_on(self) -> bool:
        return self.alpha > 0.0
