"""``radapt soak``: a real server past saturation for N minutes; fails on any 5xx but 504, a bad input
accepted, an unbounded queue, resident-memory growth or a server that stops serving.

    radapt soak --minutes 10 --out bench/SOAK.md     # the recorded run
    radapt soak --seconds 30                         # what the test suite runs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soak", help="soak a server at 2x saturation with mixed, bad and abandoned requests")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="soak length in minutes (default 10)")
    length.add_argument("--seconds", type=float, help="soak length in seconds")
    p.add_argument("--overload", type=float, default=2.0, help="offered load over measured capacity (default 2)")
    p.add_argument("--model", default="builtin:tiny-clip", help="CLIP model (default builtin:tiny-clip)")
    p.add_argument("--chat-model", default="builtin:tiny-llava",
                   help="chat model, or 'none' (default builtin:tiny-llava)")
    p.add_argument("--device", default="cpu", help="server device (default cpu)")
    p.add_argument("--dtype", default="float32", help="server dtype (default float32)")
    p.add_argument("--max-queue", type=int, default=64, help="server max_queue (default 64)")
    p.add_argument("--max-rss-growth", type=float, default=0.05,
                   help="largest RSS growth after warm-up, a fraction (default 0.05)")
    p.add_argument("--out", help="write the report as Markdown here (and JSON next to it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    from bench.server import ServerError
    from bench.soak import SoakConfig, report_markdown, run_soak

    seconds = args.seconds if args.seconds is not None else 60.0 * (args.minutes if args.minutes else 10.0)
    if seconds <= 0 or args.overload <= 0 or args.max_queue < 1:
        print("error: the length, --overload and --max-queue must be positive", file=sys.stderr)
        return 2
    cfg = SoakConfig(duration_s=seconds, overload=args.overload, clip_model=args.model,
                     chat_model=None if args.chat_model.lower() == "none" else args.chat_model,
                     device=args.device, dtype=args.dtype, max_queue=args.max_queue,
                     max_rss_growth=args.max_rss_growth)
    try:
        report = run_soak(cfg)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = report_markdown(report, _machine())
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] else 1


def _machine() -> str:
    import os

    from adapters.zoo.loading import cpu_flags

    bf16 = "with" if cpu_flags() & {"avx512_bf16", "amx_bf16"} else "without"
    return f"Machine: {os.cpu_count()} CPUs, {bf16} AVX512-BF16/AMX."
