"""Shared reading of the deployment files: Dockerfile instructions, .dockerignore, served routes,
metric names and Settings built from an environment the way a container would see it.

Tests reach these helpers through the ``deploy`` fixture (the suite imports test modules with
``--import-mode=importlib``, so a conftest cannot be imported by name)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent
ZOO_CACHE_VAR = "RADAPT_CACHE"  # read by adapters.zoo, not a Settings field


@pytest.fixture(scope="session")
def deploy():
    """This module's names: ``deploy.ROOT``, ``deploy.dockerfile_instructions()``, ..."""
    own = {k: v for k, v in globals().items()
           if not k.startswith("_") and (k.isupper() or getattr(v, "__module__", None) == __name__)}
    return SimpleNamespace(**own)


@dataclass(frozen=True)
class Instruction:
    stage: str  # the stage it belongs to ("" before the first FROM)
    keyword: str  # upper case: FROM, RUN, ENV, ...
    args: str  # continuation lines joined, comments dropped


def dockerfile_instructions(path: Path = ROOT / "Dockerfile") -> list[Instruction]:
    """Docker's line rules: ``\\`` continues a line, ``#`` lines are comments (also inside one)."""
    out: list[Instruction] = []
    stage, pending = "", ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.search(r"\bAS\s+(\S+)\s*$", args, re.IGNORECASE)
            stage = m.group(1) if m else args.strip()
        out.append(Instruction(stage, keyword, args.strip()))
    return out


def env_pairs(args: str) -> dict[str, str]:
    """``ENV A=1 B="x y"`` -> {A: 1, B: x y} (the key=value form only)."""
    pairs = {}
    for m in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', args):
        pairs[m.group(1)] = m.group(2).strip('"')
    return pairs


def dockerignore_patterns(path: Path = ROOT / ".dockerignore") -> list[str]:
    lines = (ln.strip() for ln in path.read_text().splitlines())
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def docker_excludes(rel: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``rel`` out of the build context: the last matching pattern wins, and a
    pattern that matches a parent folder matches everything under it."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def build_context(dest: Path) -> list[str]:
    """Copy the files Docker would send as build context into ``dest``; return their paths."""
    patterns = dockerignore_patterns()
    negations = [p[1:] for p in patterns if p.startswith("!")]

    def prune(rel: str) -> bool:  # an excluded folder no `!` pattern reaches into (skips .venv, caches)
        return docker_excludes(rel, patterns) and not any("*" in n or n.startswith(rel) for n in negations)

    sent = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = Path(dirpath).relative_to(ROOT).as_posix()
        dirnames[:] = [d for d in dirnames if not prune(d if rel_dir == "." else f"{rel_dir}/{d}")]
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not docker_excludes(rel, patterns):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, dest / rel)
                sent.append(rel)
    return sent


def load_yaml_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def get_statuses(paths: list[str]) -> dict[str, int]:
    """GET each path on the real app through ASGI (its models not loaded): 404 = not served."""
    import asyncio

    import httpx

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(models=["builtin:tiny-clip"]))

    async def fetch() -> dict[str, int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            return {p: (await client.get(p)).status_code for p in paths}

    return asyncio.run(fetch())


SAMPLE_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                   "gauge": ("",), "summary": ("", "_sum", "_count", "_created")}


def metric_families() -> dict[str, str]:
    """The service's metric families, name -> type (prometheus_client names counters without _total)."""
    from service.metrics import Metrics

    return {family.name: family.type for family in Metrics().registry.collect()}


def metric_sample_names() -> set[str]:
    """Every sample name the service's registry can expose (``_total``, ``_bucket``, ... included)."""
    return {name + s for name, kind in metric_families().items() for s in SAMPLE_SUFFIXES.get(kind, ("",))}


def family_of(sample: str, families: dict[str, str]) -> str:
    for name, kind in families.items():
        if sample in {name + s for s in SAMPLE_SUFFIXES.get(kind, ("",))}:
            return name
    raise KeyError(sample)


def referenced_metrics(expr: str) -> set[str]:
    """The radapt_* metric names a PromQL expression reads."""
    return set(re.findall(r"\bradapt_[a-z_]+\b", expr))


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, adapter_dir: Path):
    """Settings as a container with exactly ``env`` would build them (container paths swapped for
    ``adapter_dir``, since the validator wants the folder to exist)."""
    from service.settings import Settings

    for key in list(os.environ):
        if key.startswith("RADAPT_") and key != ZOO_CACHE_VAR:
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("RADAPT_") and key != ZOO_CACHE_VAR and value is not None:  # None: left unset
            monkeypatch.setenv(key, str(adapter_dir) if key == "RADAPT_ADAPTER_DIR" else value)
    return Settings()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
