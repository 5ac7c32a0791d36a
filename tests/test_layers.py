"""The import graph's layers: the contracts in pyproject.toml ``[tool.importlinter]`` hold on this tree,
and each one fails when the arrow it forbids is added (to a copy of the tree)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("adapters", "service", "bench")

# contract id -> (file of the copy, the forbidden import added to it)
WRONG_ARROWS = {
    "adapters-layers": [
        ("adapters/method/config.py", "import adapters.lab.attacks"),  # the method on the lab
        ("adapters/method/io.py", "import adapters.zoo"),  # the method on the zoo
        ("adapters/lab/report.py", "import adapters.zoo.loading"),  # the lab on the zoo
    ],
    "service-layers": [
        ("service/runners/preprocess.py", "import service.engine.batcher"),  # the runners on the engine
        ("service/engine/tasks.py", "import service.schemas.clip"),  # the engine on the HTTP schema
        ("service/adapters_manager.py", "import service.routes.deps"),  # the manager on a route
        ("service/errors.py", "import service.settings"),  # the bottom on a layer above
        ("service/unplaced.py", "import service.errors"),  # a new module in no layer (exhaustive)
    ],
    "adapters-standalone": [("adapters/method/io.py", "import service.errors")],
    "service-without-bench": [("service/media.py", "import bench.machine")],
    "bench-through-the-surface": [("bench/loadgen.py", "import service.engine.batcher")],
    "no-circles": [
        ("bench/images.py", "import bench.run"),  # bench.run imports bench.images
        ("adapters/method/family.py", "import adapters.method.model"),  # model -> family
    ],
}


def lint(root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    args = [arg for c in contracts for arg in ("--contract", c)]
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())", "--no-cache", "--no-logo", *args,
                           str(root / "pyproject.toml")], cwd=root, capture_output=True, text=True, timeout=120)


def copy_tree(dst: Path) -> None:
    """The three packages' Python files and pyproject.toml: all the linter reads."""
    def not_source(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__" or not (n.endswith(".py") or (Path(folder) / n).is_dir())]

    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=not_source)
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")


def test_the_tree_keeps_every_contract() -> None:
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_every_contract_is_exercised() -> None:
    import tomllib

    ids = {c["id"] for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}
    assert ids == set(WRONG_ARROWS)


@pytest.mark.parametrize("contract,arrow", [(c, a) for c, arrows in WRONG_ARROWS.items() for a in arrows],
                         ids=lambda v: v if isinstance(v, str) else v[0])
def test_a_wrong_arrow_breaks_its_contract(tmp_path: Path, contract: str, arrow: tuple[str, str]) -> None:
    copy_tree(tmp_path)
    assert lint(tmp_path, contract).returncode == 0  # the copy is the tree
    path, line = arrow
    target = tmp_path / path
    target.write_text((target.read_text() if target.exists() else "") + f"\n{line}  # the wrong arrow\n")
    out = lint(tmp_path, contract)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 broken" in out.stdout and line.split()[-1].rsplit(".", 1)[0] in out.stdout
