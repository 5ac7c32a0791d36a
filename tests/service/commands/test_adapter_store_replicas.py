"""Two `radapt serve` processes on loopback sharing an adapter-store directory: an upload on A is
served by B, a delete on B leaves A, a restarted replica comes back with the store's adapters, and a
corrupt file in the store is refused by both while everything else keeps serving. Every wait is bounded."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

MODEL = "builtin:tiny-clip"
SYNC_S = 0.3
CONVERGE_S = 20.0  # many sync intervals: two busy cores shared with other test runs


def start(port: int, store: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--device",
           "cpu", "--dtype", "float32", "--model", MODEL, "--adapter-store", str(store),
           "--adapter-sync-s", str(SYNC_S)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADAPT_") or k == "RADAPT_CACHE"}
    env["RADAPT_WARMUP"] = "false"
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)


def until(what: str, check: Callable[[], object], timeout: float, logs: list[Path]) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            result = check()
            if result:
                return result
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}:\n" + "\n".join(p.read_text()[-2000:] for p in logs))


@contextlib.contextmanager
def replicas(store: Path, tmp: Path, free_port: Callable[[], int]) -> Iterator[dict]:
    """``{"A": (base, proc, log), "B": ...}``; ``restart("B")`` on the returned dict's key "restart"."""
    procs: dict = {}

    def launch(name: str) -> None:
        port, log = free_port(), tmp / f"{name}.log"
        proc = start(port, store, log)
        base = f"http://127.0.0.1:{port}"
        procs[name] = (base, proc, log)

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            return httpx.get(base + "/health/ready", timeout=2).status_code == 200
        until(f"{name} ready", ready, 120.0, [log])

    try:
        launch("A")
        launch("B")
        yield {"procs": procs, "launch": launch}
    finally:
        for _, proc, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def listing(base: str) -> dict:
    return httpx.get(base + "/v1/adapters", timeout=5).json()


def served(base: str) -> dict[str, str]:
    return {a["name"]: a["digest"] for a in listing(base)["data"]}


def classify(base: str, adapter: str) -> httpx.Response:
    png = base64.b64encode(_png()).decode()
    return httpx.post(base + "/v1/classify", json={"image": f"data:image/png;base64,{png}", "labels": ["a", "b"],
                                                  "adapter": adapter}, timeout=30)


def _png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (30, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def build(path: Path, sigma: float, alpha: float) -> bytes:
    from service.cli import main

    assert main(["adapter", "build", "--model", MODEL, "--sigma", str(sigma), "--alpha", str(alpha),
                 "--device", "cpu", "--out", str(path)]) == 0
    return path.read_bytes()


def test_two_replicas_share_one_adapter_store(tmp_path, free_port):
    store = tmp_path / "store"
    store.mkdir()
    soft, hard = build(tmp_path / "soft.safetensors", 2.0, 0.25), build(tmp_path / "hard.safetensors", 0.5, 0.75)
    with replicas(store, tmp_path, free_port) as r:
        procs = r["procs"]
        (a, _, log_a), (b, _, log_b) = procs["A"][:3], procs["B"][:3]
        logs = [log_a, log_b]
        # an upload on A is served by B, the same bytes (digest) and the same answers
        resp = httpx.post(a + "/v1/adapters", data={"name": "shared"}, files={"file": ("f", soft)}, timeout=30)
        assert resp.status_code == 201, resp.text
        digest = resp.json()["adapter"]["digest"]
        until("B serving 'shared'", lambda: served(b).get("shared") == digest, CONVERGE_S, logs)
        ra, rb = classify(a, "shared"), classify(b, "shared")
        assert ra.status_code == rb.status_code == 200 and ra.json()["results"] == rb.json()["results"]
        assert ra.json()["results"] != classify(a, "default").json()["results"]
        # a delete on B leaves A
        assert httpx.delete(b + "/v1/adapters/shared", timeout=10).status_code == 200
        until("A dropping 'shared'", lambda: "shared" not in served(a), CONVERGE_S, logs)
        assert classify(a, "shared").status_code == 404
        # a restarted replica comes back with the store's adapters before it reports ready
        resp = httpx.post(a + "/v1/adapters", data={"name": "kept"}, files={"file": ("f", hard)}, timeout=30)
        assert resp.status_code == 201, resp.text
        procs["B"][1].terminate()
        procs["B"][1].wait(timeout=30)
        r["launch"]("B")
        b, log_b = procs["B"][0], procs["B"][2]
        assert served(b).get("kept") == resp.json()["adapter"]["digest"]  # at once: no wait here
        assert classify(b, "kept").status_code == 200
        # a corrupt file in the store is refused by both, never served, and disturbs nothing else
        blob = store / "blobs" / ("0" * 64 + ".safetensors")
        blob.write_bytes(soft[: len(soft) // 2])
        (store / "refs" / "builtin%3Atiny-clip" / "broken.json").write_text(f'{{"sha256": "{"0" * 64}"}}')
        for base in (a, b):
            until("'broken' refused", lambda base=base: [x["name"] for x in listing(base)["store"]["refused"]]
                  == ["broken"], CONVERGE_S, [log_a, log_b])
            assert set(served(base)) == {"default", "kept"} and classify(base, "kept").status_code == 200
            assert classify(base, "broken").status_code == 404
            assert "radapt_adapter_store_refused 1.0" in httpx.get(base + "/metrics", timeout=5).text
        assert listing(a)["store"]["version"] == listing(b)["store"]["version"]
        assert "refused" in log_a.read_text() and "broken" in log_b.read_text()
