"""SIGTERM drains `radapt serve`: readiness fails at once, in-flight work finishes (or, past the
grace, gets the documented JSON 503 / a stream error event), and the process exits by itself."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

pytestmark = pytest.mark.integration

MODEL = "builtin:tiny-llava"


@contextlib.contextmanager
def serving(free_port, log_path, grace: float) -> Iterator[tuple[str, subprocess.Popen]]:
    """`radapt serve` on loopback, ready; killed at the end if it did not exit by itself."""
    port = free_port()
    proc = start(port, log_path, grace)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.kill()


def start(port: int, log_path, grace: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--device",
           "cpu", "--dtype", "float32", "--model", MODEL, "--shutdown-grace-s", str(grace)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADAPT_") or k == "RADAPT_CACHE"}
    env["RADAPT_MAX_NEW_TOKENS_LIMIT"] = "4000"  # generations long enough to outlast a short grace anywhere
    proc = subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        try:
            if httpx.get(base + "/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.2)


def running(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("radapt_running_sequences{"))


def fire(base: str, n: int, max_tokens: int) -> tuple[list, list[threading.Thread]]:
    """``n`` chats and one stream, each on its own connection; results land in the list."""
    results: list = [None] * (n + 1)
    body = {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "tell me a story"}]}

    def chat(i: int) -> None:
        results[i] = httpx.post(base + "/v1/chat/completions", json=body, timeout=60)

    def stream() -> None:
        with httpx.stream("POST", base + "/v1/chat/completions", json=body | {"stream": True}, timeout=60) as r:
            results[n] = [json.loads(line[6:]) for line in r.iter_lines()
                          if line.startswith("data: ") and line != "data: [DONE]"]

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(n)] + [threading.Thread(target=stream)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while running(base) < n + 1:  # all of them decoding
        assert time.monotonic() < deadline, "requests never started"
        time.sleep(0.02)
    return results, threads


def test_sigterm_lets_in_flight_generations_finish_then_exits(tmp_path, free_port):
    with serving(free_port, tmp_path / "serve.log", grace=60) as (base, proc):
        results, threads = fire(base, 4, max_tokens=300)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no longer listening: readiness fails at once
            httpx.get(base + "/health/ready", timeout=2)
        for t in threads:
            t.join(60)
        for r in results[:-1]:
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 300, r.text
        assert results[-1][-1]["choices"][0]["finish_reason"] == "length"
        assert proc.wait(30) == 0
        assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_past_the_grace_in_flight_work_gets_json_503_and_stream_an_error_event(tmp_path, free_port):
    with serving(free_port, tmp_path / "serve.log", grace=0.3) as (base, proc):
        results, threads = fire(base, 3, max_tokens=4000)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        for r in results[:-1]:
            assert r.status_code == 503 and r.headers["content-type"] == "application/json", r.text
            assert r.json()["error"]["code"] == "shutting_down"
        last = results[-1][-1]
        assert last["choices"][0]["finish_reason"] == "error" and last["error"]["code"] == "shutting_down"
        assert proc.wait(30) == 0
