"""``radapt eval --task caption|vqa``: robust captioning and VQA of LLaVA and Qwen-VL models."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from service.commands.eval_options import UsageError, check_extras, parse_attacks, parse_floats, parse_sweep


def run_lvlm(args: argparse.Namespace) -> int:
    from adapters import load_adapter
    from adapters.lab.evaluate import comparison_configs, sweep_configs
    from adapters.lab.lvlm_attacks import LvlmTarget
    from adapters.lab.lvlm_eval import CAPTION_PROMPT, MAX_NEW_TOKENS, VQA_PROMPT, evaluate_lvlm, read_dataset
    from adapters.lab.report import markdown_table, write_lvlm_reports
    from adapters.method.model import RAdaptModel
    from adapters.zoo.loading import load_model

    eps = parse_floats(args.eps or "2,4", "--eps")
    attacks = parse_attacks(args.attack or "apgd", args.task)
    if any(e < 0 for e in eps):
        raise UsageError("--eps values must be >= 0")
    if args.steps < 1 or args.max_refs < 1 or (args.n is not None and args.n < 1) \
            or (args.max_new_tokens is not None and args.max_new_tokens < 1):
        raise UsageError("--steps, --max-refs, --max-new-tokens and --n must be >= 1")
    if args.task == "vqa" and args.prompt is not None and "{question}" not in args.prompt:
        raise UsageError("--prompt for --task vqa needs {question}")
    check_extras(attacks)
    grid = parse_sweep(args.sweep)
    items = read_dataset(args.dataset, args.task)
    items = items[:args.n] if args.n is not None else items
    adapters = [(Path(f).stem, load_adapter(f)) for f in args.adapter]

    started = time.time()
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    if loaded.family == "clip":
        raise UsageError(f"--task {args.task} needs a LLaVA or Qwen-VL model; {args.model} is a CLIP model "
                         "(use --task classify)")
    rmodel = RAdaptModel.from_loaded(loaded)
    white, configs = comparison_configs(rmodel, adapters, source=f"white:{args.model}")
    configs += [] if grid is None else sweep_configs(white, grid["sigma"], grid["alpha"])
    target = LvlmTarget(rmodel, loaded.processor)
    results = evaluate_lvlm(target, items, args.task, configs, eps, attacks, steps=args.steps, seed=args.seed,
                            max_new_tokens=args.max_new_tokens, prompt=args.prompt, max_refs=args.max_refs,
                            progress=not args.no_progress)
    settings: dict[str, Any] = {
        "task": args.task, "model": args.model, "model_path": loaded.path, "device": str(loaded.device),
        "dtype": args.dtype, "dataset": str(Path(args.dataset).resolve()), "n": len(items), "eps": eps,
        "eps_units": "1/255", "attacks": attacks, "steps": args.steps, "seed": args.seed,
        "max_new_tokens": args.max_new_tokens or MAX_NEW_TOKENS[args.task],
        "prompt": args.prompt or (CAPTION_PROMPT if args.task == "caption" else VQA_PROMPT), "max_refs": args.max_refs,
        "adapters": list(args.adapter), "sweep": grid, "seconds": round(time.time() - started, 3),
    }
    files = write_lvlm_reports(results, settings, Path(args.out))
    print(markdown_table(results, attacks, args.task), end="")
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0
