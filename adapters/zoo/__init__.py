"""The model zoo: ``builtin:`` names for checkpoints this project builds itself, and
``loading.load_model``, the one loader of any model reference (builtin name, local folder, hub id).

Each builder is deterministic (fixed seed, locally built tokenizer and processor) and needs no
network. ``export`` writes an ordinary Hugging Face folder that plain ``transformers`` loads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "builtin:"
ZOO_VERSION = "1"  # bump when a builder changes, so cached exports are rebuilt


@dataclass(frozen=True)
class BuiltinSpec:
    name: str
    description: str
    build: Callable[[], tuple[Any, Any]]  # () -> (model, processor)
    files: tuple[str, ...] = ()  # committed weight files (under zoo/weights) the build reads
    # (sigma, alpha) of the default adapter when the server is not told: what `radapt eval --sweep` chose for
    # this model (None: the library defaults)
    robust_defaults: tuple[float, float] | None = None

    def digest(self) -> str:
        """A short hash of ``files``' contents ('' when none): retrained weights get a fresh cache."""
        if not self.files:
            return ""
        import hashlib

        h = hashlib.sha256()
        for name in self.files:
            h.update((Path(__file__).with_name("weights") / name).read_bytes())
        return "-" + h.hexdigest()[:12]


def _clip(attr: str) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        from adapters.zoo import clip

        return getattr(clip, attr)()
    return build


def _fashion(attr: str) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        from adapters.zoo import fashion

        return getattr(fashion, attr)()
    return build


def _vlm(attr: str) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        from adapters.zoo import vlm

        return getattr(vlm, attr)()
    return build


REGISTRY: dict[str, BuiltinSpec] = {
    spec.name: spec
    for spec in [
        BuiltinSpec("tiny-clip", "CLIP, 32 px, 8 px patches, width 32, 2+2 layers", _clip("tiny_clip")),
        BuiltinSpec("clip-vit-b32-random", "CLIP ViT-B/32 architecture at 224 px, random weights",
                    _clip("clip_vit_b32_random")),
        BuiltinSpec("fashion-clip", "CLIP trained on Fashion-MNIST, 28 px, 4 px patches, width 128, 4+3 layers",
                    _fashion("fashion_clip"), ("fashion-clip.safetensors",), robust_defaults=(0.5, 0.0)),
        BuiltinSpec("fashion-clip-fare", "fashion-clip, vision tower FARE-fine-tuned (eps 4/255)",
                    _fashion("fashion_clip_fare"), ("fashion-clip.safetensors", "fashion-clip-fare.safetensors")),
        BuiltinSpec("fashion-clip-tecoa", "fashion-clip, vision tower TeCoA-fine-tuned (eps 4/255)",
                    _fashion("fashion_clip_tecoa"), ("fashion-clip.safetensors", "fashion-clip-tecoa.safetensors")),
        BuiltinSpec("tiny-llava", "LLaVA: tiny CLIP vision tower + tiny Llama", _vlm("tiny_llava")),
        BuiltinSpec("tiny-qwen2-vl", "Qwen2-VL, tiny vision and text towers", _vlm("tiny_qwen2_vl")),
        BuiltinSpec("tiny-qwen2.5-vl", "Qwen2.5-VL, tiny, window attention", _vlm("tiny_qwen2_5_vl")),
        BuiltinSpec("tiny-qwen3-vl", "Qwen3-VL, tiny, deepstack", _vlm("tiny_qwen3_vl")),
    ]
}


def is_builtin(name: str) -> bool:
    return name.startswith(PREFIX)


def spec_for(name: str) -> BuiltinSpec:
    key = name[len(PREFIX):] if is_builtin(name) else name
    if key not in REGISTRY:
        raise KeyError(f"unknown builtin model {name!r}; known: "
                       + ", ".join(PREFIX + k for k in sorted(REGISTRY)))
    return REGISTRY[key]


def robust_defaults(name: str) -> tuple[float, float] | None:
    """The swept (sigma, alpha) of a builtin model (docs/fashion-clip.md); None for other names."""
    if not is_builtin(name) or name[len(PREFIX):] not in REGISTRY:
        return None
    return REGISTRY[name[len(PREFIX):]].robust_defaults


def export(name: str, out_dir: str | os.PathLike[str]) -> Path:
    """Build ``name`` and write it (model, config, tokenizer, processor) to ``out_dir``."""
    spec = spec_for(name)
    model, processor = spec.build()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def cache_dir() -> Path:
    root = os.environ.get("RADAPT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "radapt")
    return Path(root) / "builtin"


def ensure_exported(name: str) -> Path:
    """The folder of ``name``'s export in the local cache, building it on first use."""
    spec = spec_for(name)
    target = cache_dir() / f"{spec.name}-v{ZOO_VERSION}{spec.digest()}"
    if (target / ".complete").exists():
        return target
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    export(name, tmp)
    (tmp / ".complete").write_text("ok\n")
    try:
        tmp.rename(target)
    except OSError:  # another process won the race; its export is identical
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target
