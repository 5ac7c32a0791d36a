"""R-Adapt: a Gaussian Input Filter and a Fixed Robustness Anchor on frozen vision encoders."""

from adapters.anchor import Adapter
from adapters.config import (
    DEFAULT_ALPHA,
    DEFAULT_SIGMA,
    FORMAT_VERSION,
    AdapterConfig,
    AdapterError,
    AdapterMismatchError,
    Fingerprint,
)
from adapters.io import adapter_from_bytes, adapter_to_bytes, load_adapter, save_adapter
from adapters.model import RAdaptModel

__all__ = [
    "Adapter", "AdapterConfig", "AdapterError", "AdapterMismatchError", "DEFAULT_ALPHA", "DEFAULT_SIGMA",
    "FORMAT_VERSION", "Fingerprint", "RAdaptModel", "adapter_from_bytes", "adapter_to_bytes",
    "load_adapter", "save_adapter",
]
