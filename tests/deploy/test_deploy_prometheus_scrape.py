"""End to end: `radapt serve` on loopback, configured as the container is (RADAPT_* variables, an
adapter directory standing in for the shared volume), a real Prometheus scraping it every second with
the shipped config and alert rules; classify traffic and an adapter hot-swap from the directory; then
Prometheus' query API must show the counters moving, every dashboard query evaluating and every alert
rule healthy. Also runs the image's HEALTHCHECK command against the live server."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 120.0  # builtin:tiny-clip on 2 busy cores, imports included
SCRAPE_TIMEOUT_S = 30.0
CLASSIFY_REQUESTS = 6


class Proc:
    """A child process with its output in a file; stopped by ``stop`` (terminate, then kill)."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, env=env,
                                      stdin=subprocess.DEVNULL)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=15)
        self._out.close()


def wait_for(what: str, check: Callable[[], object], timeout: float, procs: list[Proc]) -> object:
    """Poll ``check`` until it returns something truthy; fail with the processes' logs otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.popen.poll() is not None:
                pytest.fail(f"{proc.log.name} exited with {proc.popen.returncode} waiting for {what}:\n{proc.tail()}")
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n" + "\n".join(p.tail() for p in procs))


def png_b64(color: tuple[int, int, int]) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 32), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def prometheus_config(deploy, radapt_port: int, prom_port: int, out: Path) -> Path:
    """The shipped prometheus.yml, pointed at loopback and scraping every second."""
    config = yaml.safe_load((deploy.DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(deploy.DEPLOY / "prometheus" / f) for f in config["rule_files"]]
    for job in config["scrape_configs"]:
        port = radapt_port if job["job_name"] == "radapt" else prom_port
        for static in job["static_configs"]:
            static["targets"] = [f"127.0.0.1:{port}"]
    out.write_text(yaml.safe_dump(config))
    return out


@pytest.fixture(scope="module")
def stack(deploy, tmp_path_factory) -> Iterator[dict]:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus missing: apt-get install prometheus (scripts/setup.sh does)")
    from service.cli import main

    tmp = tmp_path_factory.mktemp("stack")
    adapter_dir = tmp / "adapters"  # the shared adapter volume of compose and Kubernetes
    assert main(["adapter", "build", "--model", "builtin:tiny-clip", "--sigma", "1.5", "--alpha", "0.3",
                 "--device", "cpu", "--out", str(adapter_dir / "soft.safetensors")]) == 0
    (tmp / "store").mkdir()  # the adapter store's volume (a missing folder reads as not mounted)
    radapt_port, prom_port = deploy.free_port(), deploy.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADAPT_") or k == deploy.ZOO_CACHE_VAR}
    env.update(HF_HUB_OFFLINE="1", RADAPT_MODELS="builtin:tiny-clip,builtin:tiny-llava", RADAPT_HOST="127.0.0.1",
               RADAPT_PORT=str(radapt_port), RADAPT_DEVICE="cpu", RADAPT_ADAPTER_DIR=str(adapter_dir),
               RADAPT_ADAPTER_STORE=str(tmp / "store"), RADAPT_ADAPTER_SYNC_S="0.5",  # as deploy/k8s: a store
               RADAPT_PLAYGROUND="true")  # its attacks feed the attacks panel
    procs: list[Proc] = []
    try:
        # no flags, like the image (CMD []): everything from the environment
        procs.append(Proc([sys.executable, "-m", "service.cli", "serve"], tmp / "radapt.log", env=env))
        config = prometheus_config(deploy, radapt_port, prom_port, tmp / "prometheus.yml")
        procs.append(Proc([prometheus, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{prom_port}",
                           f"--storage.tsdb.path={tmp / 'tsdb'}", "--log.level=warn"], tmp / "prometheus.log"))
        radapt_url, prom_url = f"http://127.0.0.1:{radapt_port}", f"http://127.0.0.1:{prom_port}"
        wait_for("radapt /health/ready", lambda: httpx.get(f"{radapt_url}/health/ready", timeout=5).status_code == 200,
                 READY_TIMEOUT_S, procs)
        wait_for("prometheus /-/ready", lambda: httpx.get(f"{prom_url}/-/ready", timeout=5).status_code == 200,
                 SCRAPE_TIMEOUT_S, procs)
        yield {"radapt": radapt_url, "prometheus": prom_url, "radapt_port": radapt_port, "procs": procs}
    finally:
        for proc in reversed(procs):
            proc.stop()


def query(stack: dict, expr: str) -> list[dict]:
    r = httpx.get(f"{stack['prometheus']}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def counter(stack: dict, expr: str) -> float:
    result = query(stack, expr)
    return sum(float(s["value"][1]) for s in result)


@pytest.fixture(scope="module")
def traffic(stack) -> dict:
    """Classify requests (standard and robust), an adapter hot-swap from the adapter directory and a
    request that uses it, two captions, a playground attack and one bad request; all after a first scrape."""
    wait_for("the first scrape of radapt", lambda: query(stack, 'up{job="radapt"} == 1'), SCRAPE_TIMEOUT_S,
             stack["procs"])
    ok_expr = 'sum(radapt_requests_total{job="radapt", endpoint="/v1/classify", status="200"})'
    before = counter(stack, ok_expr)
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    for i in range(CLASSIFY_REQUESTS):
        r = httpx.post(f"{stack['radapt']}/v1/classify", timeout=60, json={
            "image": png_b64(colors[i % 3]), "labels": ["red", "green", "blue"], "robust": i % 2 == 1})
        assert r.status_code == 200, r.text
    swap = httpx.post(f"{stack['radapt']}/v1/adapters", json={"name": "soft", "path": "soft.safetensors"},
                      timeout=60)
    assert swap.status_code in (200, 201) and swap.json()["adapter"]["name"] == "soft", swap.text
    r = httpx.post(f"{stack['radapt']}/v1/classify", timeout=60, json={
        "image": png_b64(colors[0]), "labels": ["red", "green", "blue"], "adapter": "soft"})
    assert r.status_code == 200 and r.json()["adapter"] == "soft", r.text
    for robust in (False, True):  # generation feeds the token, running-rows and first-token panels
        r = httpx.post(f"{stack['radapt']}/v1/caption", timeout=60, json={
            "model": "builtin:tiny-llava", "image": png_b64(colors[1]), "max_tokens": 4, "robust": robust})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4, r.text
    r = httpx.post(f"{stack['radapt']}/playground/api/attack", timeout=60, json={
        "model": "builtin:tiny-clip", "image": png_b64(colors[2]), "labels": ["red", "green", "blue"], "eps": 4,
        "steps": 2})
    assert r.status_code == 200 and r.json()["linf"] <= 4, r.text
    bad = httpx.post(f"{stack['radapt']}/v1/classify", json={"image": "not base64!", "labels": ["x"]}, timeout=60)
    assert 400 <= bad.status_code < 500
    return {"ok_expr": ok_expr, "before": before}


def test_prometheus_ingests_radapt_requests_total_and_it_moves(stack, traffic):
    target = CLASSIFY_REQUESTS + 1 + traffic["before"]  # + the request with the swapped-in adapter
    wait_for(f"radapt_requests_total to reach {target}",
             lambda: counter(stack, traffic["ok_expr"]) >= target, SCRAPE_TIMEOUT_S, stack["procs"])
    assert counter(stack, traffic["ok_expr"]) == target  # exactly our requests, no phantom counts
    errors = 'sum(radapt_requests_total{job="radapt", endpoint="/v1/classify", status=~"4.."})'
    wait_for("the bad request's 4xx", lambda: counter(stack, errors) >= 1, SCRAPE_TIMEOUT_S, stack["procs"])

    def by_mode() -> dict[str, float] | None:
        result = query(stack, 'sum by (mode) (radapt_robust_requests_total{job="radapt"})')
        counts = {s["metric"]["mode"]: float(s["value"][1]) for s in result}
        return counts if {"robust", "standard"} <= counts.keys() else None

    counts = wait_for("robust and standard counts", by_mode, SCRAPE_TIMEOUT_S, stack["procs"])
    assert counts["robust"] >= CLASSIFY_REQUESTS // 2 and counts["standard"] >= CLASSIFY_REQUESTS // 2


def _grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$model", ".*")


def test_every_dashboard_query_evaluates_and_traffic_panels_have_data(stack, traffic, deploy):
    dash = json.loads((deploy.DEPLOY / "grafana" / "dashboards" / "radapt.json").read_text())
    exprs = [_grafana_to_promql(t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    must_fill = [e for e in exprs if "radapt_" in e]  # the traffic above feeds every radapt_* metric
    for expr in exprs:
        query(stack, expr)  # asserts the query is valid PromQL that Prometheus accepts
    # rate() needs two scrapes of a series; the last series the traffic made may be a second old
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    empty = must_fill
    while empty and time.monotonic() < deadline:
        time.sleep(0.5)
        empty = [e for e in empty if not query(stack, e)]
    assert not empty, f"panels with no data after traffic: {empty}"


def test_alert_rules_load_and_evaluate_healthy(stack, traffic):
    def rules() -> list[dict] | None:
        body = httpx.get(f"{stack['prometheus']}/api/v1/rules", timeout=10).json()
        found = [r for g in body["data"]["groups"] for r in g["rules"]]
        # an unevaluated rule reports Go's zero time, 0001-01-01
        return found if found and not any(r["lastEvaluation"].startswith("0001") for r in found) else None

    evaluated = wait_for("alert rules evaluated", rules, SCRAPE_TIMEOUT_S, stack["procs"])
    assert {r["name"] for r in evaluated} >= {"RadaptDown", "RadaptHighErrorRate", "RadaptQueueBacklog"}
    assert all(r["health"] == "ok" for r in evaluated), [(r["name"], r.get("lastError")) for r in evaluated]
    assert not [r for r in evaluated if r["state"] == "firing"]  # a healthy server fires nothing


def test_image_healthcheck_command_passes_when_ready_and_fails_when_down(stack, deploy):
    check = next(i.args for i in deploy.dockerfile_instructions() if i.keyword == "HEALTHCHECK")
    cmd = json.loads(check.split("CMD", 1)[1])
    cmd[0] = sys.executable  # `python` in the image is the venv's interpreter
    for port, expected in ((stack["radapt_port"], 0), (deploy.free_port(), 1)):
        proc = subprocess.run(cmd, env={**os.environ, "RADAPT_PORT": str(port)}, capture_output=True, timeout=30)
        assert proc.returncode == expected, proc.stderr.decode()[-500:]
