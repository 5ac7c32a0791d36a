"""``radapt``: one entry point, one subcommand module each (``service/commands/``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> module under service.commands with register(subparsers) and run(args) -> int
COMMANDS = {
    "models": "models",
    "adapter": "adapter",
    "eval": "eval",
    "serve": "serve",
    "bench": "bench",
    "soak": "soak",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radapt", description="R-Adapt Serve: robust vision-language serving")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"service.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"service.commands.{module_name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
