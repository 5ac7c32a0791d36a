"""``radapt models list`` and ``radapt models export NAME DIR``."""

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
