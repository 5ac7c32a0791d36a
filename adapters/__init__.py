"""R-Adapt: a Gaussian Input Filter and a Fixed Robustness Anchor on frozen vision encoders.

Three layers, each a subpackage: ``adapters.method`` (the method itself; these names are its public
API), ``adapters.lab`` (attacks, evaluation, training, reports) and ``adapters.zoo`` (the builtin
models and the one loader of any model). Imports run zoo -> lab -> method, never back.
"""

from adapters.method.acquire import guided_adapter, white_adapter
from adapters.method.anchor import Adapter
from adapters.method.config import (
    DEFAULT_ALPHA,
    DEFAULT_SIGMA,
    FORMAT_VERSION,
    AdapterConfig,
    AdapterError,
    AdapterMismatchError,
    Fingerprint,
)
from adapters.method.io import adapter_from_bytes, adapter_to_bytes, load_adapter, save_adapter
from adapters.method.model import RAdaptModel

__all__ = [
    "Adapter", "AdapterConfig", "AdapterError", "AdapterMismatchError", "DEFAULT_ALPHA", "DEFAULT_SIGMA",
    "FORMAT_VERSION", "Fingerprint", "RAdaptModel", "adapter_from_bytes", "adapter_to_bytes",
    "guided_adapter", "load_adapter", "save_adapter", "white_adapter",
]
