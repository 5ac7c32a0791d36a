"""``radapt eval``: clean and robust scores, standard mode vs R-Adapt configurations.

``--task classify`` (default): zero-shot accuracy of a CLIP model on an ImageFolder.
``--task caption|vqa``: CIDEr / VQA accuracy of a LLaVA or Qwen-VL model under attacks on the
language-model loss of the references (``adapters.lab.lvlm_eval``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from service.commands.eval_options import (
    UsageError,
    check_extras,
    parse_attacks,
    parse_floats,
    parse_sweep,
    read_templates,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="clean and robust zero-shot accuracy, captioning CIDEr or VQA accuracy",
                       description="Attack standard mode and each R-Adapt configuration through its own "
                                   "forward pass; write results.json, results.md and a plot.")
    p.add_argument("--task", choices=("classify", "caption", "vqa"), default="classify",
                   help="classify (CLIP, ImageFolder; default), caption (DIR/captions.json) or vqa "
                        "(DIR/vqa.json) with a LLaVA or Qwen-VL model")
    p.add_argument("--model", required=True, help="hub id, local folder or builtin: name (CLIP for classify, "
                                                  "LLaVA / Qwen-VL for caption and vqa)")
    p.add_argument("--adapter", action="append", default=[], metavar="FILE",
                   help="an adapter file to evaluate (repeatable); the default white anchor always runs")
    p.add_argument("--dataset", required=True, help="classify: ImageFolder (one subfolder per class, name = "
                                                    "class); caption / vqa: folder with captions.json / vqa.json")
    p.add_argument("--eps", default=None, help="L-inf radii in 1/255, comma separated (default 1,2,4 for "
                                                "classify, 2,4 for caption and vqa)")
    p.add_argument("--attack", default=None,
                   help="comma separated; classify: apgd-ce, apgd-t, pgd (default apgd-ce,apgd-t); "
                        "caption / vqa: apgd, pgd on the reference loss (default apgd)")
    p.add_argument("--steps", type=int, default=100, help="iterations per attack (default 100)")
    p.add_argument("--n", type=int, default=None, help="images to evaluate, balanced over classes (default all)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--sweep", nargs="+", metavar="KEY=V1,V2",
                   help="also sweep the white anchor's settings, e.g. sigma=0.5,1,2 alpha=0.25,0.5,0.75")
    p.add_argument("--templates", help="text file of prompt templates, one per line with {} for the class")
    p.add_argument("--batch-size", type=int, default=32, help="images per attacked batch (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of image sampling and attack starts")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("caption and vqa")
    g.add_argument("--max-new-tokens", type=int, default=None, help="generated tokens (default 20 caption, 5 vqa)")
    g.add_argument("--prompt", default=None, help="instruction; vqa: with {question} (defaults in docs/robustness.md)")
    g.add_argument("--max-refs", type=int, default=5, help="references whose loss the attack raises (default 5)")
    g.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="model dtype for the attacks (default float32)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adapters.method.config import AdapterError
    from adapters.zoo.loading import ModelLoadError

    try:
        return _run(args)
    except (UsageError, AdapterError, ModelLoadError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # the dataset: unreadable images, too few classes
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.task != "classify":
        from service.commands.eval_lvlm import run_lvlm

        return run_lvlm(args)
    import torch

    from adapters import load_adapter
    from adapters.lab.evaluate import comparison_configs, evaluate, sweep_configs
    from adapters.lab.imagefolder import ImageFolder, load_pixels
    from adapters.lab.report import markdown_table, write_reports
    from adapters.lab.zeroshot import class_embeddings, logit_scale_of
    from adapters.method.model import RAdaptModel
    from adapters.zoo.loading import load_model

    eps, attacks = parse_floats(args.eps or "1,2,4", "--eps"), parse_attacks(args.attack or "apgd-ce,apgd-t")
    if any(e < 0 for e in eps):
        raise UsageError("--eps values must be >= 0")
    if args.steps < 1 or args.batch_size < 1 or (args.n is not None and args.n < 1):
        raise UsageError("--steps, --batch-size and --n must be >= 1")
    check_extras(attacks)
    grid = parse_sweep(args.sweep)
    templates = read_templates(args.templates)
    dataset = ImageFolder.scan(args.dataset)
    if "apgd-t" in attacks and len(dataset.classes) < 4:
        raise UsageError(f"apgd-t needs at least 4 classes; {args.dataset} has {len(dataset.classes)}")
    adapters = [(Path(f).stem, load_adapter(f)) for f in args.adapter]

    started = time.time()
    loaded = load_model(args.model, device=args.device, dtype="float32")  # attacks run in fp32
    if loaded.family != "clip":
        raise UsageError(f"radapt eval classifies zero-shot and needs a CLIP model; {args.model} is "
                         f"{loaded.family}")
    rmodel = RAdaptModel.from_loaded(loaded)
    white, configs = comparison_configs(rmodel, adapters, source=f"white:{args.model}")
    sweep = [] if grid is None else sweep_configs(white, grid["sigma"], grid["alpha"])

    picked = dataset.subset(args.n, args.seed)
    processor = getattr(loaded.processor, "image_processor", loaded.processor)
    images = load_pixels([p for p, _ in picked], processor)
    labels = torch.tensor([c for _, c in picked])
    text = class_embeddings(loaded.model, loaded.processor.tokenizer, dataset.classes, templates)
    results = evaluate(rmodel, text, logit_scale_of(loaded.model), images, labels, configs + sweep, eps,
                       attacks, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                       progress=not args.no_progress)
    settings: dict[str, Any] = {
        "model": args.model, "model_path": loaded.path, "device": str(loaded.device), "dtype": "float32",
        "dataset": str(Path(args.dataset).resolve()), "classes": list(dataset.classes), "n": len(picked),
        "eps": eps, "eps_units": "1/255", "attacks": attacks, "steps": args.steps, "seed": args.seed,
        "batch_size": args.batch_size, "templates": list(templates), "adapters": list(args.adapter),
        "sweep": grid, "seconds": round(time.time() - started, 3),
    }
    main, swept = results[:len(configs)], results[len(configs):]
    files = write_reports(main, settings, Path(args.out), sweep=swept)
    print(markdown_table(results, attacks), end="")
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0
