"""/health/*, /metrics (parses, moves with traffic), OpenAPI."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.api, pytest.mark.asyncio(loop_scope="session")]

NAMES = {"radapt_requests", "radapt_request_duration_seconds", "radapt_queue_duration_seconds",
         "radapt_inference_duration_seconds", "radapt_batch_size", "radapt_queue_depth", "radapt_robust_requests",
         "radapt_adapter_operations", "radapt_adapter_operation_duration_seconds", "radapt_adapters_loaded",
         "radapt_model_load_duration_seconds", "radapt_errors"}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_parse_and_move_with_traffic(client, png):
    resp = await client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    families = {f.name for f in text_string_to_metric_families(resp.text)}
    assert NAMES <= families
    before = samples(resp.text)
    for robust in (True, False, True):
        assert (await client.post("/v1/classify", json={"image": png(), "labels": ["a", "b"],
                                                        "robust": robust})).status_code == 200
    assert (await client.post("/v1/classify", json={"image": "??", "labels": ["a"]})).status_code == 400
    after = samples((await client.get("/metrics")).text)
    model = ("model", "builtin:tiny-clip")

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("radapt_requests_total", endpoint="/v1/classify", status="200") == 3
    assert moved("radapt_requests_total", endpoint="/v1/classify", status="400") == 1
    assert moved("radapt_errors_total", reason="invalid_base64") == 1
    assert moved("radapt_robust_requests_total", model=model[1], mode="robust") == 2
    assert moved("radapt_robust_requests_total", model=model[1], mode="standard") == 1
    assert moved("radapt_batch_size_count", model=model[1]) >= 1
    assert moved("radapt_inference_duration_seconds_count", model=model[1]) >= 1
    assert moved("radapt_queue_duration_seconds_count", model=model[1]) == 3
    assert moved("radapt_request_duration_seconds_count", endpoint="/v1/classify") == 4
    assert after[("radapt_adapters_loaded", (model,))] >= 1
    assert after[("radapt_model_load_duration_seconds", (model,))] > 0


async def test_health_openapi_and_request_ids(client):
    live = await client.get("/health/live")
    assert live.json() == {"status": "ok"}
    other = await client.get("/health/live")
    assert live.headers["x-request-id"] != other.headers["x-request-id"]
    echoed = await client.get("/health/live", headers={"x-request-id": "trace-42"})
    assert echoed.headers["x-request-id"] == "trace-42"
    ready = await client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    spec = (await client.get("/openapi.json")).json()
    assert {"/v1/classify", "/v1/embeddings", "/v1/adapters", "/health/ready"} <= set(spec["paths"])


async def test_ready_is_503_until_loaded():
    import httpx

    from service.app import create_app
    from service.engine.engine import Engine
    from service.settings import load_settings

    settings = load_settings(models=["builtin:tiny-clip"], device="cpu")
    engine = Engine(settings)  # not started
    app = create_app(settings, engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        resp = await c.get("/health/ready")
        assert resp.status_code == 503 and resp.json()["status"] == "created"
        resp = await c.post("/v1/classify", json={"image": "AAAA", "labels": ["a"]})
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "not_ready"
        assert resp.headers["retry-after"] == "5"
        assert (await c.get("/health/live")).status_code == 200
    engine.pool.shutdown()
