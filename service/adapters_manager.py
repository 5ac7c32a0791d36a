"""Adapters per served model: a white adapter built at load ("default"), others added at runtime.

Hot-swap is copy-on-write: every change builds a new dict and replaces the reference. A batch
reads the reference once (``snapshot()``) and keeps that view to the end, and ``Adapter`` objects
are immutable, so a running batch is never disturbed and no lock is needed.

Every adapter is checked whole before it is stored (architecture, token layout, values, sigma for
this model's input, and the weight digest when both sides have one), so one that loads can run.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch

from adapters import Adapter, AdapterError, AdapterMismatchError, Fingerprint, adapter_from_bytes, load_adapter
from adapters.method import digest
from adapters.method.io import adapter_to_bytes, check_adapter
from service.errors import BadRequest, Conflict, NotFound
from service.metrics import Metrics
from service.settings import ADAPTER_NAME

log = logging.getLogger(__name__)
DEFAULT = "default"


@dataclass(frozen=True)
class AdapterInfo:
    """One loaded adapter (``id``: the uid of the adapter object, new with every load or swap)."""

    name: str
    model: str
    id: str
    method: str
    sigma: float
    alpha: float
    source: str
    digest: str  # sha256 of the adapter file's bytes ("" when unknown)


class AdapterStore:
    """The adapters of one model, on the model's device and dtype."""

    def __init__(self, model: str, fingerprint: Fingerprint, device: torch.device, dtype: torch.dtype,
                 metrics: Metrics, allow_weight_mismatch: bool = False) -> None:
        self.model = model
        self.fingerprint = fingerprint
        self.device, self.dtype = device, dtype
        self.allow_weight_mismatch = allow_weight_mismatch
        self._metrics = metrics
        self._adapters: Mapping[str, Adapter] = MappingProxyType({})
        self._digests: dict[str, str] = {}  # name -> sha256 of the adapter file's bytes

    def snapshot(self) -> Mapping[str, Adapter]:
        return self._adapters

    def put(self, name: str, adapter: Adapter, allow_weight_mismatch: bool | None = None,
            digest: str | None = None) -> str:
        """Add or replace ``name``; returns the operation (load | swap). Raises on a mismatch.

        ``allow_weight_mismatch``: None = the store's own setting. ``digest``: the sha256 of the
        file's bytes when the caller has it (else computed from the adapter's canonical bytes)."""
        start = time.monotonic()
        check_name(name)
        self.check(name, adapter, self.allow_weight_mismatch if allow_weight_mismatch is None
                   else allow_weight_mismatch)
        placed = adapter.to(self.device, self.dtype)
        op = "swap" if name in self._adapters else "load"
        self._digests[name] = digest or hashlib.sha256(adapter_to_bytes(adapter)).hexdigest()
        self._adapters = MappingProxyType({**self._adapters, name: placed})
        self._record(op, start)
        return op

    def remove(self, name: str) -> None:
        start = time.monotonic()
        self.check_removable(name)
        self._adapters = MappingProxyType({k: v for k, v in self._adapters.items() if k != name})
        self._record("remove", start)

    def check_removable(self, name: str) -> None:
        """Raise a 404 unless ``name`` is loaded, a 409 for the default adapter."""
        if name not in self._adapters:
            raise NotFound(f"model {self.model} has no adapter {name!r}", "adapter_not_found")
        if name == DEFAULT:
            raise Conflict("the default adapter cannot be removed (replace it by loading another under "
                           "the name 'default')", "adapter_protected")

    def check(self, name: str, adapter: Adapter, allow_weight_mismatch: bool = False) -> None:
        """Raise a 400 unless ``adapter`` runs on this model: layout, values, sigma, weight digest."""
        try:
            adapter.config.fingerprint.check_fits(self.fingerprint)
        except AdapterMismatchError as exc:
            raise BadRequest(f"adapter {name!r} does not fit model {self.model}: {exc}", "adapter_mismatch") from None
        try:
            check_adapter(adapter)
        except AdapterError as exc:
            raise BadRequest(f"adapter {name!r} cannot run: {exc}", "invalid_adapter") from None
        if adapter.config.sigma > self.fingerprint.max_sigma:
            raise BadRequest(f"adapter {name!r}: sigma {adapter.config.sigma} is too wide for {self.model}'s "
                             f"{self.fingerprint.image_size} px input (at most {self.fingerprint.max_sigma:.2f})",
                             "invalid_adapter")
        self._check_weights(name, adapter.config.fingerprint.weights, allow_weight_mismatch)

    def _check_weights(self, name: str, weights: str, allow: bool) -> None:
        """A digest that differs from the model's: refused, or a warning when the settings allow it."""
        if not weights or not self.fingerprint.weights:
            return  # older files carry no digest
        diff = digest.difference(weights, self.fingerprint.weights)
        if diff <= digest.TOLERANCE:
            return
        message = (f"adapter {name!r} was built on other weights than {self.model}'s (same architecture, "
                   f"another checkpoint: block-0 weights differ by {diff:.1%}); its anchor does not fit "
                   "this model. Build it on this model (`radapt adapter build`)")
        if not allow:
            raise BadRequest(message + " or start the server with --allow-weight-mismatch",
                             "adapter_weights_mismatch")
        log.warning("%s; loaded anyway (allow_weight_mismatch)", message)

    def infos(self) -> list[AdapterInfo]:
        return [AdapterInfo(name=name, model=self.model, id=a.uid, method=a.config.method, sigma=a.config.sigma,
                            alpha=a.config.alpha, source=a.config.source, digest=self._digests.get(name, ""))
                for name, a in sorted(self._adapters.items())]

    def _record(self, op: str, start: float) -> None:
        self._metrics.adapter_ops.labels(op=op).inc()
        self._metrics.adapter_op_duration.labels(op=op).observe(time.monotonic() - start)
        self._metrics.adapters_loaded.labels(model=self.model).set(len(self._adapters))


def check_name(name: str) -> None:
    if not ADAPTER_NAME.match(name):
        raise BadRequest(f"adapter name {name!r} must be 1-64 letters, digits, '.', '_' or '-'",
                         "invalid_adapter_name")


def resolve_in_dir(directory: Path | None, relative: str) -> Path:
    """``relative`` inside ``directory``; anything that escapes it (.., absolute, symlinks) is refused."""
    if directory is None:
        raise BadRequest("this server has no adapter directory (--adapter-dir); upload the file instead",
                         "adapter_dir_unset")
    if any(ord(c) < 32 or c == "\x7f" for c in relative):
        raise BadRequest("adapter path contains control characters (NUL, newline, ...)", "adapter_path_refused")
    root = directory.resolve()
    try:
        candidate = (root / relative).resolve()
        is_file = candidate.is_file()
    except (OSError, ValueError, RuntimeError):  # too long, a symlink loop, ...
        raise BadRequest(f"adapter path {relative[:200]!r} cannot be resolved", "adapter_path_refused") from None
    if Path(relative).is_absolute() or not candidate.is_relative_to(root) or candidate == root:
        raise BadRequest(f"adapter path {relative!r} is outside the adapter directory", "adapter_path_refused")
    if not is_file:
        raise NotFound(f"no adapter file {relative!r} in the adapter directory", "adapter_file_not_found")
    return candidate


def parse_file(path: Path) -> Adapter:
    try:
        return load_adapter(path)
    except AdapterError as exc:
        raise BadRequest(str(exc).replace(str(path), path.name), "invalid_adapter") from None


def parse_bytes(data: bytes, name: str) -> Adapter:
    try:
        return adapter_from_bytes(data, source_name=name)
    except AdapterError as exc:
        raise BadRequest(str(exc), "invalid_adapter") from None
