"""``radapt``: the service's own subcommands plus those other packages add through entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from service import cli

pytestmark = pytest.mark.unit


def test_bench_and_soak_come_from_the_bench_package_by_entry_point(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listed = capsys.readouterr().out
    for name in ("models", "adapter", "eval", "serve", "bench", "soak"):
        assert name in listed
    modules = {m.__name__ for m in cli.command_modules()}
    assert {"bench.commands.bench", "bench.commands.soak"} <= modules
    assert not any(name.startswith("bench") for name in cli.COMMANDS.values())


def test_a_plugin_whose_package_is_absent_is_skipped_and_a_broken_one_is_not(monkeypatch, tmp_path) -> None:
    absent = EntryPoint("gone", "no_such_package_here.commands", cli.PLUGIN_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [absent] if group == cli.PLUGIN_GROUP else [])
    assert [m.__name__ for m in cli.command_modules()] == [f"service.commands.{n}" for n in cli.COMMANDS.values()]

    (tmp_path / "radapt_broken_plugin.py").write_text("import radapt_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = EntryPoint("broken", "radapt_broken_plugin", cli.PLUGIN_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [broken])
    with pytest.raises(ModuleNotFoundError, match="radapt_no_such_dependency"):  # there, but broken: said
        cli.command_modules()
