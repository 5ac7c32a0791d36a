"""``radapt adapter build`` (white, guided; data when the training module is present) and ``inspect``."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.method.model import RAdaptModel
    from adapters.zoo.loading import LoadedModel

METHODS = ("white", "guided", "data")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adapter", help="build and inspect R-Adapt adapter files")
    verbs = p.add_subparsers(dest="verb", required=True)
    b = verbs.add_parser("build", help="acquire an anchor and write an adapter file")
    b.add_argument("--model", required=True, help="hub id, local folder or builtin: name")
    b.add_argument("--method", choices=METHODS, default="white")
    b.add_argument("--robust-model", help="guided: a robust model of the same architecture (e.g. FARE)")
    b.add_argument("--sigma", type=float, default=None, help="filter sigma in input pixels (0 = off)")
    b.add_argument("--alpha", type=float, default=None, help="anchor blend weight in [0, 1] (0 = off)")
    b.add_argument("--device", default="auto")
    b.add_argument("--out", required=True, help="output .safetensors file")
    add_data_arguments(b)
    b.set_defaults(func=run_build)
    i = verbs.add_parser("inspect", help="print an adapter file's metadata")
    i.add_argument("file")
    i.set_defaults(func=run_inspect)


def add_data_arguments(b: argparse.ArgumentParser) -> None:
    """Options of the data-driven method; its module adds nothing here if absent."""
    try:
        from adapters.lab import train
    except ImportError:
        return
    train.add_arguments(b)


def run_build(args: argparse.Namespace) -> int:
    from adapters import save_adapter
    from adapters.method.acquire import guided_adapter, white_adapter
    from adapters.method.config import AdapterError
    from adapters.method.model import RAdaptModel
    from adapters.zoo.loading import ModelLoadError, load_model

    problem = check_build_args(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        served = load_model(args.model, device=args.device, dtype="float32")
        if args.method == "data" and served.family not in ("clip", "llava"):
            print(f"error: --method data trains fixed-resolution anchors (CLIP, LLaVA); {args.model} is "
                  f"{served.family}, whose images have variable grids: use --method white or guided", file=sys.stderr)
            return 2
        rmodel = RAdaptModel.from_loaded(served)
        if args.method == "white":
            adapter = white_adapter(rmodel, args.sigma, args.alpha, source=f"white:{args.model}")
        elif args.method == "guided":
            adapter = guided_adapter(rmodel, robust_rmodel(args.robust_model, served, args.device),
                                     args.sigma, args.alpha, source=f"guided:{args.robust_model}")
        else:
            try:
                from adapters.lab import train
            except ImportError:
                print("error: the data method is not available in this build", file=sys.stderr)
                return 2
            adapter = train.build_from_args(rmodel, served, args)
    except (AdapterError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_adapter(adapter, args.out)
    print(f"wrote {args.method} adapter to {args.out} ({tuple(adapter.anchor.shape)} anchor, "
          f"sigma={adapter.config.sigma}, alpha={adapter.config.alpha})")
    return 0


def check_build_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags, found before any model loads (None when nothing is)."""
    from adapters.method.config import MAX_SIGMA

    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        return f"--alpha must be in [0, 1], got {args.alpha}"
    if args.sigma is not None and not 0.0 <= args.sigma <= MAX_SIGMA:
        return f"--sigma must be in [0, {MAX_SIGMA:g}] pixels, got {args.sigma}"
    if args.method == "guided" and not args.robust_model:
        return "--method guided needs --robust-model (a robust checkpoint of the same architecture, e.g. FARE)"
    if args.method != "guided" and args.robust_model:
        return f"--robust-model is only used by --method guided (not {args.method})"
    if args.method == "data" and not getattr(args, "images", None):
        return "--method data needs --images DIR (a folder of unlabelled images)"
    return None


def robust_rmodel(name: str, served: LoadedModel, device: str) -> RAdaptModel:
    """The robust model for a guided anchor: a transformers model, or an open_clip safetensors file."""
    from adapters.lab import openclip
    from adapters.method.config import AdapterMismatchError
    from adapters.method.model import RAdaptModel
    from adapters.zoo.loading import load_model

    checkpoint = openclip.find_checkpoint(name)
    if checkpoint is None:
        return RAdaptModel.from_loaded(load_model(name, device=device, dtype="float32"))
    if served.family not in ("clip", "llava"):
        raise AdapterMismatchError(f"open_clip checkpoints hold CLIP towers; {served.name} is {served.family}")
    vision_config = served.model.config.vision_config
    vision = openclip.load_vision_model(checkpoint, vision_config).to(served.device)
    ip = served.processor.image_processor
    return RAdaptModel(vision, ip.image_mean, ip.image_std)


def run_inspect(args: argparse.Namespace) -> int:
    from adapters import load_adapter
    from adapters.method.config import AdapterError

    try:
        adapter = load_adapter(args.file)
    except AdapterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = adapter.config
    fingerprint = json.loads(cfg.fingerprint.to_json())
    if fingerprint.get("weights"):  # a long sketch: show a short, stable handle of it
        fingerprint["weights"] = "sha256:" + hashlib.sha256(fingerprint["weights"].encode()).hexdigest()[:16]
    print(json.dumps({"method": cfg.method, "sigma": cfg.sigma, "alpha": cfg.alpha, "source": cfg.source,
                      "fingerprint": fingerprint, "extra": cfg.extra,
                      "anchor_shape": list(adapter.anchor.shape)}, indent=2))
    return 0
