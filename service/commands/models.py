"""``radapt models list``, ``radapt models export NAME DIR`` and ``radapt models train NAME``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="the offline model zoo (builtin: names)")
    verbs = p.add_subparsers(dest="verb", required=True)
    lst = verbs.add_parser("list", help="list builtin models")
    lst.set_defaults(func=run_list)
    exp = verbs.add_parser("export", help="write a builtin model as a Hugging Face folder")
    exp.add_argument("name", help="e.g. builtin:tiny-clip")
    exp.add_argument("dir", help="output folder")
    exp.set_defaults(func=run_export)
    tr = verbs.add_parser("train", help="retrain a builtin model that has committed weights (needs its dataset)",
                          description="Retrain builtin:fashion-clip (contrastive, Fashion-MNIST) or its FARE / "
                                      "TeCoA fine-tunes, and rewrite the committed weights under adapters/zoo/weights.")
    tr.add_argument("name", help="fashion-clip, fashion-clip-fare or fashion-clip-tecoa (builtin: prefix optional)")
    tr.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    tr.set_defaults(func=run_train)


def run_list(args: argparse.Namespace) -> int:
    from adapters import zoo

    for name, spec in sorted(zoo.REGISTRY.items()):
        print(f"{zoo.PREFIX}{name:24s} {spec.description}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from adapters import zoo

    try:
        out = zoo.export(args.name, args.dir)
    except KeyError as exc:
        print(f"error: {exc.args[0]}")
        return 2
    print(f"wrote {args.name} to {out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from adapters import zoo
    from adapters.zoo import fashion, fashion_data

    name = args.name.removeprefix(zoo.PREFIX)
    if name not in fashion.VARIANTS:
        print(f"error: only {', '.join(fashion.VARIANTS)} can be retrained; got {args.name!r}")
        return 2
    if not fashion_data.available():
        print(f"error: Fashion-MNIST is not under {fashion_data.root()}: apt-get install dataset-fashion-mnist")
        return 2
    from adapters.zoo.fashion_train import main

    return main([name] + ([] if args.threads is None else ["--threads", str(args.threads)]))
