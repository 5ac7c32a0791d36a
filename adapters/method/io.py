"""The adapter file: one safetensors file, tensor ``anchor`` plus string metadata.

Metadata keys: ``format_version``, ``method``, ``sigma``, ``alpha``, ``fingerprint`` (JSON),
``source``, and ``extra.*`` for anything else (e.g. Qwen's reference grid, training settings).
Keys carry no adapter name, so a file loads under any name. Nothing is ever unpickled.
A file that loads can run: ``check_adapter`` checks the anchor against the fingerprint's token
layout (rows, width, grid), its dtype and values, and every metadata field (``AdapterConfig``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from adapters.method import digest
from adapters.method.anchor import Adapter
from adapters.method.config import FORMAT_VERSION, AdapterConfig, AdapterError, Fingerprint

MAX_ADAPTER_BYTES = 256 * 1024 * 1024


def adapter_to_bytes(adapter: Adapter) -> bytes:
    cfg = adapter.config
    metadata = {
        "format_version": str(FORMAT_VERSION),
        "method": cfg.method,
        "sigma": repr(float(cfg.sigma)),
        "alpha": repr(float(cfg.alpha)),
        "fingerprint": cfg.fingerprint.to_json(),
        "source": cfg.source,
    }
    metadata.update({f"extra.{k}": str(v) for k, v in cfg.extra.items()})
    return st_save({"anchor": adapter.anchor.detach().float().cpu().contiguous()}, metadata=metadata)


def save_adapter(adapter: Adapter, path: str | os.PathLike[str]) -> Path:
    """Write ``adapter`` to ``path`` atomically (write to a temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(adapter_to_bytes(adapter))
    tmp.replace(path)
    return path


def adapter_from_bytes(data: bytes, source_name: str = "<bytes>") -> Adapter:
    """Parse and validate an adapter file's bytes; raise AdapterError with the reason."""
    if len(data) > MAX_ADAPTER_BYTES:
        raise AdapterError(f"{source_name}: adapter file is larger than {MAX_ADAPTER_BYTES} bytes")
    try:
        tensors = st_load(data)
        metadata = _read_metadata(data)
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise AdapterError(f"{source_name}: not a valid safetensors adapter file ({exc})") from exc
    if set(tensors) != {"anchor"}:
        raise AdapterError(f"{source_name}: expected exactly one tensor 'anchor', found {sorted(tensors)}")
    anchor = tensors["anchor"]
    if anchor.dim() != 2 or not torch.is_floating_point(anchor):
        raise AdapterError(f"{source_name}: 'anchor' must be a 2-D float tensor [tokens, dim], "
                           f"got {anchor.dtype} {tuple(anchor.shape)}")
    missing = [k for k in ("format_version", "method", "sigma", "alpha", "fingerprint") if k not in metadata]
    if missing:
        raise AdapterError(f"{source_name}: metadata lacks {', '.join(missing)}")
    if metadata["format_version"] != str(FORMAT_VERSION):
        raise AdapterError(f"{source_name}: format_version {metadata['format_version']} is not supported "
                           f"(this build reads {FORMAT_VERSION})")
    try:
        fingerprint = Fingerprint.from_json(metadata["fingerprint"])
        try:
            sigma, alpha = float(metadata["sigma"]), float(metadata["alpha"])
        except ValueError as exc:
            raise AdapterError(f"sigma and alpha must be numbers ({exc})") from exc
        extra = {k[len("extra."):]: v for k, v in metadata.items() if k.startswith("extra.")}
        config = AdapterConfig(fingerprint=fingerprint, method=metadata["method"], sigma=sigma, alpha=alpha,
                               source=metadata.get("source", ""), extra=extra)
        adapter = Adapter(config, anchor)
        check_adapter(adapter)
    except AdapterError as exc:
        raise type(exc)(f"{source_name}: {exc}") from None
    return Adapter(config, adapter.anchor.float().contiguous())


def check_adapter(adapter: Adapter) -> None:
    """Raise AdapterError unless the anchor fits its own fingerprint's token layout and is usable.

    ``anchor: [tokens, hidden]``: fixed-resolution encoders need ``num_tokens`` rows, variable-resolution
    ones one row per patch of ``extra["grid"]``. Float, finite, and a readable weight digest if any.
    """
    anchor, cfg = adapter.anchor, adapter.config
    fp = cfg.fingerprint
    if anchor.dim() != 2 or not torch.is_floating_point(anchor):
        raise AdapterError(f"'anchor' must be a 2-D float tensor [tokens, dim], got {anchor.dtype} "
                           f"{tuple(anchor.shape)}")
    if anchor.shape[-1] != fp.hidden_size:
        raise AdapterError(f"anchor width {anchor.shape[-1]} != fingerprint hidden size {fp.hidden_size}")
    if fp.variable_resolution:
        h, w = cfg.grid()
        if h * w != anchor.shape[0]:
            raise AdapterError(f"anchor has {anchor.shape[0]} rows but its grid {h}x{w} has {h * w} patches")
    elif anchor.shape[0] != fp.num_tokens:
        raise AdapterError(f"anchor has {anchor.shape[0]} rows but the model has {fp.num_tokens} tokens "
                           f"({fp.image_size} px images, {fp.patch_size} px patches)")
    if not torch.isfinite(anchor).all():
        raise AdapterError("'anchor' holds NaN or infinite values")
    if fp.weights and not digest.is_valid(fp.weights):
        raise AdapterError("fingerprint weights digest is not readable by this build")


def load_adapter(path: str | os.PathLike[str]) -> Adapter:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AdapterError(f"cannot read adapter file {path}: {exc.strerror}") from exc
    if size > MAX_ADAPTER_BYTES:
        raise AdapterError(f"{path}: adapter file is larger than {MAX_ADAPTER_BYTES} bytes")
    return adapter_from_bytes(path.read_bytes(), str(path))


def _read_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (header parsed as JSON, never executed)."""
    import json
    import struct

    if len(data) < 8:
        raise ValueError("file too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError("header length exceeds file size")
    header = json.loads(data[8:8 + n])
    meta = header.get("__metadata__") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError("metadata must map strings to strings")
    return meta
