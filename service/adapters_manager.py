"""Adapters per served model: a white adapter built at load ("default"), others added at runtime.

Hot-swap is copy-on-write: every change builds a new dict and replaces the reference. A batch
reads the reference once (``snapshot()``) and keeps that view to the end, and ``Adapter`` objects
are immutable, so a running batch is never disturbed and no lock is needed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from adapters import Adapter, AdapterError, AdapterMismatchError, Fingerprint, adapter_from_bytes, load_adapter
from service.errors import BadRequest, Conflict, NotFound
from service.metrics import Metrics
from service.settings import ADAPTER_NAME

DEFAULT = "default"


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    model: str
    uid: str
    method: str
    sigma: float
    alpha: float
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "id": self.uid, "method": self.method,
                "sigma": self.sigma, "alpha": self.alpha, "source": self.source}


class AdapterStore:
    """The adapters of one model, on the model's device and dtype."""

    def __init__(self, model: str, fingerprint: Fingerprint, device: torch.device, dtype: torch.dtype,
                 metrics: Metrics) -> None:
        self.model = model
        self.fingerprint = fingerprint
        self.device, self.dtype = device, dtype
        self._metrics = metrics
        self._adapters: Mapping[str, Adapter] = MappingProxyType({})

    def snapshot(self) -> Mapping[str, Adapter]:
        return self._adapters

    def put(self, name: str, adapter: Adapter) -> str:
        """Add or replace ``name``; returns the operation (load | swap). Raises on a mismatch."""
        start = time.monotonic()
        check_name(name)
        try:
            adapter.config.fingerprint.check_fits(self.fingerprint)
        except AdapterMismatchError as exc:
            raise BadRequest(f"adapter {name!r} does not fit model {self.model}: {exc}", "adapter_mismatch") from None
        placed = adapter.to(self.device, self.dtype)
        op = "swap" if name in self._adapters else "load"
        self._adapters = MappingProxyType({**self._adapters, name: placed})
        self._record(op, start)
        return op

    def remove(self, name: str) -> None:
        start = time.monotonic()
        if name not in self._adapters:
            raise NotFound(f"model {self.model} has no adapter {name!r}", "adapter_not_found")
        if name == DEFAULT:
            raise Conflict("the default adapter cannot be removed (replace it by loading another under "
                           "the name 'default')", "adapter_protected")
        self._adapters = MappingProxyType({k: v for k, v in self._adapters.items() if k != name})
        self._record("remove", start)

    def infos(self) -> list[AdapterInfo]:
        return [AdapterInfo(name, self.model, a.uid, a.config.method, a.config.sigma, a.config.alpha,
                            a.config.source) for name, a in sorted(self._adapters.items())]

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
    root = directory.resolve()
    candidate = (root / relative).resolve()
    if Path(relative).is_absolute() or not candidate.is_relative_to(root) or candidate == root:
        raise BadRequest(f"adapter path {relative!r} is outside the adapter directory", "adapter_path_refused")
    if not candidate.is_file():
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
