"""One loader for a hub id, a local folder or a ``builtin:`` name.

Honours ``HF_HUB_OFFLINE``: offline, a hub id loads only from the local cache, and a miss fails
with a message that says how to get the weights there.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adapters import zoo

log = logging.getLogger(__name__)

# model_type -> (family, transformers class name)
MODEL_CLASSES: dict[str, tuple[str, str]] = {
    "clip": ("clip", "CLIPModel"),
    "llava": ("llava", "LlavaForConditionalGeneration"),
    "qwen2_vl": ("qwen2_vl", "Qwen2VLForConditionalGeneration"),
    "qwen2_5_vl": ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration"),
    "qwen3_vl": ("qwen3_vl", "Qwen3VLForConditionalGeneration"),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message says what to do."""


@dataclass
class LoadedModel:
    name: str  # as the user gave it
    family: str  # clip | llava | qwen2_vl | qwen2_5_vl | qwen3_vl
    model: Any  # a transformers PreTrainedModel, eval mode, frozen
    processor: Any  # its transformers processor
    device: torch.device
    dtype: torch.dtype
    path: str  # the folder or hub id actually loaded


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available; use --device cpu")
    return dev


@functools.cache
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo is absent."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device, flags: frozenset[str] | None = None) -> bool:
    """Whether ``device`` computes bfloat16 in hardware (CUDA with bf16; CPUs with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = cpu_flags() if flags is None else flags
    return device.type == "cpu" and bool(flags & {"avx512_bf16", "amx_bf16"})


def slow_dtype_reason(dtype: torch.dtype, device: torch.device, flags: frozenset[str] | None = None) -> str | None:
    """Why ``dtype`` would run slowly on ``device`` (None when it runs natively)."""
    if dtype == torch.bfloat16 and not native_bf16(device, flags):
        where = "this GPU has no bfloat16 units" if device.type == "cuda" else \
            "this CPU has no AVX512-BF16 or AMX instructions (bfloat16 is emulated, ~7x slower than float32)"
        return f"bfloat16: {where}"
    if dtype == torch.float16 and device.type == "cpu":
        flags = cpu_flags() if flags is None else flags
        if not flags & {"avx512_fp16", "amx_fp16"}:
            return "float16: this CPU has no AVX512-FP16 or AMX-FP16 instructions (float16 is emulated)"
    return None


def resolve_dtype(dtype: str, device: torch.device, flags: frozenset[str] | None = None) -> torch.dtype:
    """``auto``: bfloat16 where the hardware computes it natively, else float16 on CUDA, float32 on CPU.

    A forced dtype the hardware only emulates is used as asked, with a warning saying why it is slow.
    """
    if dtype == "auto":
        if native_bf16(device, flags):
            return torch.bfloat16
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")
    reason = slow_dtype_reason(DTYPES[dtype], device, flags)
    if reason is not None:
        log.warning("--dtype %s on %s will be slow: %s; --dtype auto picks a fast one", dtype, device, reason)
    return DTYPES[dtype]


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_source(name: str) -> str:
    """A local folder for ``builtin:`` names and folders; the hub id unchanged otherwise."""
    if zoo.is_builtin(name):
        try:
            return str(zoo.ensure_exported(name))
        except KeyError as exc:
            raise ModelLoadError(str(exc.args[0])) from exc
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name.startswith((".", "/", "~")):
        raise ModelLoadError(f"model folder {name!r} does not exist")
    return name


def load_model(name: str, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load model and processor, frozen, in eval mode, on ``device`` in ``dtype``."""
    import transformers
    from transformers import AutoConfig

    from adapters.zoo.vlm import load_processor

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    source = resolve_source(name)
    try:
        config = AutoConfig.from_pretrained(source)
        if config.model_type not in MODEL_CLASSES:
            raise ModelLoadError(f"{name}: model type {config.model_type!r} is not supported; "
                                 f"supported: {', '.join(sorted(MODEL_CLASSES))}")
        family, cls_name = MODEL_CLASSES[config.model_type]
        model = getattr(transformers, cls_name).from_pretrained(source, dtype=torch_dtype)
        processor = load_processor(source, config.model_type)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as exc:
        hint = ("HF_HUB_OFFLINE is set and the weights are not in the local cache: download them on a "
                f"connected machine (`hf download {name}`) and copy the cache, or pass a local folder"
                if offline() else
                "check the hub id, or pass a local folder (`radapt models export` writes one)")
        raise ModelLoadError(f"cannot load model {name!r}: {exc.__class__.__name__}: {exc}. {hint}") from exc
    model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    log.info("loaded %s (%s) on %s in %s", name, family, dev, torch_dtype)
    return LoadedModel(name, family, model, processor, dev, torch_dtype, source)
