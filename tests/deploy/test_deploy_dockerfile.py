"""The Dockerfile and .dockerignore: lint, both variants' stages, the runtime contract, and the
build context really installs (no Docker engine here, so each build step is checked on its own)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.unit


class Dockerfile:
    """Instructions by stage, as the tests ask for them."""

    def __init__(self, deploy) -> None:
        self.deploy = deploy
        self.instructions = deploy.dockerfile_instructions()

    def stage(self, name: str) -> list:
        return [i for i in self.instructions if i.stage == name]

    def one(self, stage: str, keyword: str) -> str:
        found = [i.args for i in self.stage(stage) if i.keyword == keyword]
        assert len(found) == 1, f"{stage}: expected one {keyword}, found {found}"
        return found[0]

    def runtime_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for stage in ("base-cuda", "base-cpu", "runtime"):  # runtime's own ENV wins
            for i in self.stage(stage):
                if i.keyword == "ENV":
                    env.update(self.deploy.env_pairs(i.args))
        return env


@pytest.fixture(scope="module")
def df(deploy) -> Dockerfile:
    return Dockerfile(deploy)


def test_hadolint_passes(deploy):
    proc = subprocess.run([str(deploy.VENV_BIN / "hadolint"), str(deploy.ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_variant_argument_selects_an_existing_base_for_cuda_and_cpu(df, deploy):
    global_args = {i.args.split("=")[0]: i.args.partition("=")[2] for i in df.instructions
                   if i.keyword == "ARG" and i.stage == ""}
    assert global_args["VARIANT"] == "cuda"  # CUDA by default
    stages = {i.stage for i in df.instructions if i.keyword == "FROM"}
    for variant in ("cuda", "cpu"):
        assert f"base-{variant}" in stages
    for stage in ("builder", "runtime"):
        assert df.one(stage, "FROM").startswith("base-${VARIANT} ")
    assert df.one("base-cuda", "FROM").startswith("${CUDA_IMAGE}")
    assert df.one("base-cpu", "FROM").startswith("${PYTHON_IMAGE}")
    assert "nvidia/cuda:" in global_args["CUDA_IMAGE"] and "-runtime-" in global_args["CUDA_IMAGE"]
    assert global_args["PYTHON_IMAGE"].startswith("python:3.") and "-slim" in global_args["PYTHON_IMAGE"]
    # the CPU variant takes the CPU torch wheel, pinned by the same constraints file as CI
    assert deploy.env_pairs(df.one("base-cpu", "ENV"))["TORCH_INDEX_URL"].endswith("/whl/cpu")
    torch_install = [i.args for i in df.stage("builder") if i.keyword == "RUN" and "TORCH_INDEX_URL" in i.args]
    assert torch_install and "-c constraints-cpu.txt" in torch_install[0]
    assert re.search(r"^torch==\d", (deploy.ROOT / "constraints-cpu.txt").read_text(), re.MULTILINE)


def test_runtime_is_non_root_with_volumes_port_and_entrypoint(df, deploy):
    user = df.one("runtime", "USER")
    uid_arg = [i.args for i in df.stage("runtime") if i.keyword == "ARG" and i.args.startswith("UID=")]
    uid = uid_arg[0].split("=")[1] if user == "${UID}" else user
    assert uid.isdigit() and int(uid) > 0  # numeric, so Kubernetes' runAsNonRoot can verify it
    env = df.runtime_env()
    assert json.loads(df.one("runtime", "VOLUME")) == [env["HF_HOME"], env["RADAPT_ADAPTER_DIR"]]
    assert df.one("runtime", "EXPOSE") == env["RADAPT_PORT"] == "8000"
    assert json.loads(df.one("runtime", "ENTRYPOINT")) == ["radapt", "serve"]
    # (that `radapt` is the installed console script: test_build_context_installs_the_package)
    assert env["HF_HUB_OFFLINE"] in {"0", "1"}
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_default_args_and_env_are_valid_serve_settings(df, deploy, monkeypatch, tmp_path):
    from service.cli import build_parser

    cmd = json.loads(df.one("runtime", "CMD"))
    args = build_parser().parse_args(["serve", *cmd])
    assert args.command == "serve"
    settings = deploy.settings_from_env(df.runtime_env(), monkeypatch, tmp_path)
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert settings.adapter_dir == tmp_path
    assert settings.models == ["builtin:tiny-clip"]  # baked into the image: serves offline out of the box


def test_healthcheck_polls_a_served_readiness_route(df, deploy):
    check = df.one("runtime", "HEALTHCHECK")
    assert "--start-period=" in check
    cmd = json.loads(check.split("CMD", 1)[1])
    assert cmd[:2] == ["python", "-c"] and "curl" not in check
    path = re.search(r"http://127\.0\.0\.1:%s(/[\w/]+)", cmd[2]).group(1)
    assert path == "/health/ready"
    # served, and not ready before the models are loaded: exactly what a healthcheck must see
    assert deploy.get_statuses([path, "/health/missing"]) == {path: 503, "/health/missing": 404}


def test_dockerignore_sends_the_package_and_nothing_else(deploy):
    patterns = deploy.dockerignore_patterns()
    for needed in ("pyproject.toml", "README.md", "constraints-cpu.txt", "adapters/zoo/__init__.py",
                   "service/cli.py", "service/commands/serve.py"):
        assert not deploy.docker_excludes(needed, patterns), needed
    for kept_out in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "deploy/k8s/deployment.yaml",
                     "service/__pycache__/cli.cpython-311.pyc", "bench/out/run.json", "docs/deploy.md"):
        assert deploy.docker_excludes(kept_out, patterns), kept_out


def test_build_context_installs_the_package(deploy, tmp_path):
    """What the builder stage's `pip install .` gets: a wheel with every module and the radapt script."""
    ctx, out = tmp_path / "ctx", tmp_path / "wheels"
    ctx.mkdir()
    sent = deploy.build_context(ctx)
    assert not any(p.startswith(("tests/", ".venv/", "deploy/")) for p in sent)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(ctx)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheel = next(out.glob("radapt_serve-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    modules = {p for p in sent if p.endswith(".py") and p.startswith(("adapters/", "service/"))}
    assert modules and modules <= names
    assert "radapt = service.cli:main" in entry_points
