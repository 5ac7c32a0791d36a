"""Admission over HTTP: a model holding max_queue calls answers 429 with Retry-After (before decoding the
image), a slow forward 504; then it recovers.

A dead batch loop turns /health/ready to 503."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

pytestmark = [pytest.mark.api, pytest.mark.asyncio]


async def test_429_and_504_then_the_server_recovers(png):
    from service.app import create_app
    from service.engine.engine import Engine
    from service.settings import load_settings

    settings = load_settings(models=["builtin:tiny-clip"], device="cpu", max_queue=2, max_batch_size=1,
                             request_timeout_s=1.0, warmup=False)
    async with Engine(settings) as engine:
        batcher = engine.models["builtin:tiny-clip"].worker
        gate, entered = threading.Event(), threading.Event()
        real = batcher._run_batch

        def gated(items, snapshot):  # holds the forward until the test opens the gate
            entered.set()
            gate.wait(10)
            return real(items, snapshot)

        batcher._run_batch = gated
        app = create_app(settings, engine)
        body = {"image": png(), "labels": ["a", "b"]}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            running = asyncio.ensure_future(client.post("/v1/classify", json=body))
            await asyncio.to_thread(entered.wait, 10)
            queued = asyncio.ensure_future(client.post("/v1/classify", json=body))
            while batcher.depth < 1:
                await asyncio.sleep(0.01)
            full = await client.post("/v1/classify", json=body)
            assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
            assert int(full.headers["retry-after"]) >= 1
            late = await queued
            assert late.status_code == 504 and late.json()["error"]["code"] == "timeout"
            gate.set()
            first = await running
            assert first.status_code == 504  # its deadline passed while the gate was shut
            batcher._run_batch = real
            ok = await client.post("/v1/classify", json=body)
            assert ok.status_code == 200 and len(ok.json()["results"]) == 2
            metrics = (await client.get("/metrics")).text
            assert 'radapt_errors_total{reason="queue_full"} 1.0' in metrics
            assert 'radapt_errors_total{reason="timeout"} 2.0' in metrics
            assert (await client.get("/health/ready")).status_code == 200
            await batcher.stop()  # a dead batch loop makes the server unready
            ready = await client.get("/health/ready")
            assert ready.status_code == 503 and ready.json() == {"status": "wedged", "models": ["builtin:tiny-clip"]}
