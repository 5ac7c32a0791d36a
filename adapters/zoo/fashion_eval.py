"""The paper's comparison in miniature on ``builtin:fashion-clip``: one command, one table.

``python -m adapters.zoo.fashion_eval --out docs/fashion-clip`` evaluates, on the committed
Fashion-MNIST test slice (no dataset needed), clean and robust zero-shot accuracy (worst case
per image over APGD-CE and APGD-T, L-inf eps 1, 2, 4, 8 /255) of six configurations:

- ``standard``: the clean model; ``TeCoA`` and ``FARE``: the adversarially fine-tuned vision towers;
- ``R-Adapt white`` / ``R-Adapt guided (FARE)`` / ``R-Adapt+``: the clean model with the committed
  adapters (``weights/fashion-clip-*.adapter.safetensors``).

Writes ``results.json`` (every number, settings, versions, machine), ``results.md`` and two
plots (``accuracy.png``, ``tradeoff.png``: clean versus robust accuracy at each eps).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from adapters.zoo import fashion, fashion_data

ADAPTERS = {"R-Adapt white": "white", "R-Adapt guided (FARE)": "guided-fare", "R-Adapt+": "rplus"}
MODELS = {"standard": "fashion-clip", "TeCoA": "fashion-clip-tecoa", "FARE": "fashion-clip-fare"}
CONFIGS = tuple(MODELS) + tuple(ADAPTERS)
# The analysis (where is the robustness?): the standard model with part of FARE's vision tower put in.
SHALLOW = ("vision_model.embeddings.", "vision_model.pre_layrnorm.", "vision_model.encoder.layers.0.")
HYBRIDS = {"standard + FARE shallow (embeddings, block 0)": ("fashion-clip-fare", True),
           "standard + FARE deep (blocks 1-3, head)": ("fashion-clip-fare", False),
           "standard + TeCoA shallow (embeddings, block 0)": ("fashion-clip-tecoa", True),
           "standard + TeCoA deep (blocks 1-3, head)": ("fashion-clip-tecoa", False)}
ANALYSIS = ("standard", "FARE", "TeCoA") + tuple(HYBRIDS)
PROMPT = ("a photo of a {}.",)


def adapter_path(kind: str) -> Path:
    return fashion.WEIGHTS / f"fashion-clip-{kind}.adapter.safetensors"


def load_config_model(name: str) -> Any:
    """The CLIPModel behind configuration ``name`` (a variant, or a standard/robust hybrid)."""
    if name in MODELS:
        return fashion.load_variant(MODELS[name])[0]
    variant, shallow = HYBRIDS[name]
    model = fashion.load_variant("fashion-clip")[0]
    robust = fashion.load_variant(variant)[0].state_dict()
    swap = {k: v for k, v in robust.items()
            if k.startswith(fashion.VISION_PREFIXES) and k.startswith(SHALLOW) == shallow}
    model.load_state_dict(swap, strict=False)
    return model


def machine() -> dict[str, Any]:
    """CPU model and the flags that matter for speed, or the GPU's name."""
    info: dict[str, Any] = {"threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name"))
        flags = next(ln for ln in text.splitlines() if ln.startswith("flags")).split()
        info["cpu_flags"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    return info


def run_table(n: int = 1000, eps: Sequence[float] = (1, 2, 4, 8), attacks: Sequence[str] = ("apgd-ce", "apgd-t"),
              steps: int = 100, configs: Sequence[str] = CONFIGS, batch_size: int = 250, device: str = "cpu",
              progress: bool = True, targets: int = 9) -> tuple[list[Any], dict[str, Any]]:
    """Evaluate ``configs`` on the first ``n`` test-slice images; returns (results, settings)."""
    from adapters import load_adapter
    from adapters.lab.evaluate import EvalConfig, evaluate
    from adapters.lab.zeroshot import class_embeddings, logit_scale_of
    from adapters.method.model import RAdaptModel

    known = CONFIGS + tuple(HYBRIDS)
    unknown = [c for c in configs if c not in known]
    if unknown:
        raise ValueError(f"unknown configurations {unknown}; known: {', '.join(known)}")
    started = time.time()
    images, labels = fashion_data.load_test_slice(n)
    results = []
    processor = fashion.fashion_processor()
    for model_name in dict.fromkeys("standard" if c in ADAPTERS else c for c in configs):
        model = load_config_model(model_name).to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        rmodel = RAdaptModel(model, fashion.FASHION_MEAN, fashion.FASHION_STD)
        text = class_embeddings(model, processor.tokenizer, fashion_data.CLASSES, PROMPT)
        todo = [EvalConfig(model_name, None)] if model_name in configs else []
        if model_name == "standard":
            todo += [EvalConfig(c, load_adapter(adapter_path(ADAPTERS[c]))) for c in configs if c in ADAPTERS]
        results += evaluate(rmodel, text, logit_scale_of(model), images, labels, todo, list(eps), list(attacks),
                            steps=steps, batch_size=batch_size, seed=0, progress=progress, n_target_classes=targets)
    order = {c: i for i, c in enumerate(configs)}
    results.sort(key=lambda r: order[r.config.name])
    settings = {"model": "builtin:fashion-clip", "data": "Fashion-MNIST test split, first images (committed slice)",
                "n": int(images.shape[0]), "eps": list(eps), "eps_units": "1/255", "attacks": list(attacks),
                "steps": steps, "apgd_t_target_classes": targets, "prompt": PROMPT[0], "batch_size": batch_size,
                "seed": 0, "device": device,
                "machine": machine(), "seconds": round(time.time() - started, 1)}
    return results, settings


def write(results: list[Any], settings: dict[str, Any], out: Path,
          document: dict[str, Any] | None = None) -> dict[str, Path]:
    """results.json (``document``, default built from ``results``), results.md, accuracy.png and
    tradeoff.png (clean vs robust per eps) under ``out``."""
    from adapters.lab.report import markdown_table, plot_accuracy, to_json

    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "results.json", "markdown": out / "results.md"}
    files["json"].write_text(json.dumps(document or to_json(results, settings), indent=2) + "\n")
    files["markdown"].write_text(markdown_table(results, settings["attacks"]))
    files["accuracy"] = plot_accuracy(results, out / "accuracy.png", "fashion-clip: accuracy vs eps")
    files["tradeoff"] = plot_tradeoffs(results, out / "tradeoff.png")
    return files


def merge(parts: Sequence[Path], out: Path) -> dict[str, Path]:
    """Join ``results.json`` files of runs with the same settings (e.g. configurations run in parallel)."""
    from adapters.lab.evaluate import ConfigResult, EvalConfig

    docs = [json.loads((Path(p) / "results.json").read_text()) for p in parts]
    same = ("n", "eps", "attacks", "steps", "apgd_t_target_classes", "prompt")
    for d in docs[1:]:
        if any(d["settings"].get(k) != docs[0]["settings"].get(k) for k in same):
            raise ValueError(f"cannot merge runs with different settings ({', '.join(same)})")
    configs = sorted((c for d in docs for c in d["configurations"]),
                     key=lambda c: (ANALYSIS + CONFIGS).index(c["name"]) if c["name"] in ANALYSIS + CONFIGS else 99)
    settings = dict(docs[0]["settings"], seconds=round(sum(d["settings"]["seconds"] for d in docs), 1),
                    merged_from=len(docs))
    results = [ConfigResult(EvalConfig(c["name"]), c["n"], c["clean"], {float(e): v for e, v in c["robust"].items()},
                            {float(e): v for e, v in c["after_attack"].items()}, c["seconds"]) for c in configs]
    return write(results, settings, out, dict(docs[0], settings=settings, configurations=configs))


def plot_tradeoffs(results: list[Any], path: Path) -> Path:
    """One panel per eps: clean (y) versus robust (x) accuracy, one marker per configuration."""
    from adapters.lab.report import _pyplot, _save

    plt = _pyplot()
    eps = list(results[0].robust)
    fig, axes = plt.subplots(1, len(eps), figsize=(3.2 * len(eps), 3.6), sharey=True, squeeze=False)
    markers = "osD^vP*Xh<>"
    for ax, e in zip(axes[0], eps, strict=True):
        for i, r in enumerate(results):
            ax.scatter(100 * r.robust[e], 100 * r.clean, s=30, marker=markers[i % len(markers)], label=r.config.name)
        ax.set_xlabel(f"robust accuracy, eps {e:g}/255 (%)")
        ax.set_xlim(-3, 103)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("clean accuracy (%)")
    axes[0][0].legend(loc="lower left", fontsize=6)
    fig.suptitle("fashion-clip: clean vs robust zero-shot accuracy", fontsize=9)
    return _save(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="clean and robust accuracy of fashion-clip, its baselines and R-Adapt")
    p.add_argument("--out", required=True, help="output folder (results.json, results.md, *.png)")
    p.add_argument("--n", type=int, default=1000, help="test images (default 1000, the whole committed slice)")
    p.add_argument("--eps", default="1,2,4,8", help="L-inf radii in 1/255 (default 1,2,4,8)")
    p.add_argument("--attack", default="apgd-ce,apgd-t", help="comma separated (default apgd-ce,apgd-t)")
    p.add_argument("--steps", type=int, default=100, help="iterations per attack (default 100)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma separated subset of: " + ", ".join(CONFIGS))
    p.add_argument("--analysis", action="store_true",
                   help="instead: standard, FARE, TeCoA and the standard model with only their shallow "
                        "(embeddings + block 0) or only their deep vision layers put in")
    p.add_argument("--targets", type=int, default=9, help="APGD-T target classes (default 9, AutoAttack's)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--merge", nargs="+", metavar="DIR", help="instead: join the results of earlier runs into --out")
    args = p.parse_args(argv)
    if args.merge:
        files = merge([Path(d) for d in args.merge], Path(args.out))
        print(files["markdown"].read_text(), end="")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = list(ANALYSIS) if args.analysis else [c.strip() for c in args.configs.split(",")]
    results, settings = run_table(args.n, [float(e) for e in args.eps.split(",")], args.attack.split(","),
                                  args.steps, configs, args.batch_size, args.device, progress=not args.no_progress,
                                  targets=args.targets)
    files = write(results, settings, Path(args.out))
    print(files["markdown"].read_text(), end="")
    print(f"{settings['seconds']} s on {settings['machine']}; wrote " + ", ".join(str(f) for f in files.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
