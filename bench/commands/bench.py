"""``radapt bench``: drive a real ``radapt serve`` over HTTP and write bench/RESULTS.md plus JSON.

    radapt bench                 # full run: ViT-B/32 (random weights), float32 and bfloat16, the peer
    radapt bench --quick         # under a minute: builtin:tiny-clip, float32, no peer
    radapt bench --generation    # continuous batching on tiny-llava and tiny-qwen2-vl (add --quick: tiny-llava)
    radapt bench --playground    # classification beside attacks crafted on the server (add --quick: fashion-clip)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the server (latency, throughput, robust-mode cost, a peer)")
    p.add_argument("--quick", action="store_true", help="tiny model, short points, no peer (under a minute)")
    p.add_argument("--generation", action="store_true",
                   help="the generation section instead: head-of-line, 16 vs 1 clients, robust cost, CPU per token")
    p.add_argument("--playground", action="store_true",
                   help="the playground section instead: classify throughput and latency alone and beside attacks")
    p.add_argument("--model", help="model to serve (default builtin:clip-vit-b32-random; quick: builtin:tiny-clip)")
    p.add_argument("--dtype", action="append", dest="dtypes", choices=["float32", "bfloat16", "float16"],
                   help="dtype to measure (repeatable; default float32 and bfloat16)")
    p.add_argument("--device", help="device of the server and the limit (default cpu; e.g. cuda)")
    p.add_argument("--batch-size", type=int, help="server, peer and limit batch size (default 16)")
    p.add_argument("--concurrency", action="append", type=int, dest="concurrencies",
                   help="client concurrency (repeatable; default 1 4 16 64)")
    p.add_argument("--point-seconds", type=float, help="seconds per load point (default 8)")
    p.add_argument("--rounds", type=int, help="interleaved rounds per comparison (default 2)")
    p.add_argument("--no-peer", action="store_true", help="skip infinity-emb")
    p.add_argument("--out", help="folder for RESULTS.md and results.json (default bench/); with --quick also "
                   "its scratch files (default bench/out/quick)")
    p.add_argument("--note", action="append", dest="notes", default=[], help="a line to add to RESULTS.md")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    from dataclasses import replace

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the log

    from bench.run import BenchConfig, quick_config, run_bench
    from bench.server import ServerError

    out = Path(args.out) if args.out else None
    if args.generation:
        return run_generation(args, out)
    if args.playground:
        return run_playground(args, out)
    cfg = quick_config(out) if args.quick else BenchConfig()
    changes: dict[str, object] = {}
    for key in ("model", "device", "batch_size", "rounds"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.dtypes:
        changes["dtypes"] = tuple(args.dtypes)
    if args.concurrencies:
        if min(args.concurrencies) < 1:
            print("error: --concurrency must be >= 1", file=sys.stderr)
            return 2
        changes["concurrencies"] = tuple(sorted(set(args.concurrencies)))
    if args.point_seconds is not None:
        changes["point_s"] = args.point_seconds
    if args.no_peer:
        changes["peer"] = False
    if out is not None and not args.quick:  # quick keeps everything (scratch too) under --out
        changes.update(results_md=out / "RESULTS.md", results_json=out / "results.json")
    changes["notes"] = tuple(args.notes)
    cfg = replace(cfg, **changes)
    try:
        results = run_bench(cfg)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {cfg.results_md} and {cfg.results_json}")
    for dtype, s in results["summary"].items():
        missed = [k for k, t in s["targets"].items() if t["met"] is False]
        print(f"{dtype}: serving/limit {s['ratios']['serving_vs_limit']}, "
              f"targets missed: {', '.join(missed) or 'none'}")
    return 0


def run_generation(args: argparse.Namespace, out: Path | None) -> int:
    from dataclasses import replace

    from bench import report
    from bench.generation import GenConfig, quick_config, run_generation_bench
    from bench.server import ServerError

    cfg = quick_config(out) if args.quick else GenConfig()
    changes = _section_changes(args, out, "generation.json")
    if args.model:
        changes["models"] = (args.model,)
    cfg = replace(cfg, **changes)
    try:
        results = run_generation_bench(cfg)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    md = report.rewrite_results_md(cfg.results_json)
    print(f"wrote {cfg.results_json} and {md}")
    for model, checks in results["targets"].items():
        missed = [k for k, t in checks.items() if not t["met"]]
        print(f"{model}: " + ", ".join(f"{k} {t['value']}" for k, t in checks.items())
              + f"; targets missed: {', '.join(missed) or 'none'}")
    return 0


def run_playground(args: argparse.Namespace, out: Path | None) -> int:
    from dataclasses import replace

    from bench import report
    from bench.playground import PlaygroundConfig, quick_config, run_playground_bench
    from bench.server import ServerError

    cfg = quick_config(out) if args.quick else PlaygroundConfig()
    changes = _section_changes(args, out, "playground.json")
    if args.model:
        changes["model"] = args.model
    if args.concurrencies:
        changes["clients"] = args.concurrencies[0]
    cfg = replace(cfg, **changes)
    try:
        results = run_playground_bench(cfg)
    except (ServerError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    md = report.rewrite_results_md(cfg.results_json)
    print(f"wrote {cfg.results_json} and {md}")
    print(", ".join(f"{k} {v}" for k, v in results["ratios"].items()))
    return 0


def _section_changes(args: argparse.Namespace, out: Path | None, json_name: str) -> dict[str, object]:
    """The flags the --generation and --playground sections share, as config changes (one dtype each)."""
    changes: dict[str, object] = {}
    if args.device:
        changes["device"] = args.device
    if args.dtypes:
        changes["dtype"] = args.dtypes[0]
    if args.point_seconds is not None:
        changes["point_s"] = args.point_seconds
    if args.rounds is not None:
        changes["rounds"] = args.rounds
    if out is not None and not args.quick:
        changes["results_json"] = out / json_name
    return changes
