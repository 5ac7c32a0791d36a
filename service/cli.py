"""``radapt``: one entry point, one subcommand module each.

The service's own subcommands live in ``service/commands/``. Other packages add theirs through the
``radapt.commands`` entry points (the benchmark's ``bench`` and ``soak``), found by name at run time,
so the service never imports them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import entry_points
from types import ModuleType

# subcommand -> module under service.commands with register(subparsers) and run(args) -> int
COMMANDS = {
    "models": "models",
    "adapter": "adapter",
    "eval": "eval",
    "serve": "serve",
}
PLUGIN_GROUP = "radapt.commands"  # entry point name -> a module with the same register/run


def command_modules() -> list[ModuleType]:
    """The service's subcommand modules, then each installed plugin's (one whose module is absent is skipped)."""
    modules = [importlib.import_module(f"service.commands.{name}") for name in COMMANDS.values()]
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        if ep.name in COMMANDS:
            continue
        try:
            modules.append(ep.load())
        except ModuleNotFoundError as exc:  # skipped only when the plugin's own module (or package) is absent
            if exc.name is None or not (ep.module == exc.name or ep.module.startswith(exc.name + ".")):
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radapt", description="R-Adapt Serve: robust vision-language serving")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in command_modules():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
