"""The playground's HTTP side (ASGI): off by default, the page and its files, config, the attack API
with its limits, keys and rate limit, and the committed sample images' claim."""

from __future__ import annotations

import base64
import contextlib
import io
import re

import httpx
import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from adapters.zoo.fashion_data import CLASSES
from service.app import create_app
from service.engine.engine import Engine
from service.playground import SAMPLE_INDICES, STATIC, RateLimiter, fashion_samples
from service.settings import load_settings

pytestmark = [pytest.mark.api, pytest.mark.asyncio(loop_scope="module")]
MODEL = "builtin:fashion-clip"


@contextlib.asynccontextmanager
async def serving(**overrides):
    values = dict(models=[MODEL], device="cpu", dtype="float32", playground=True, warmup=False) | overrides
    settings = load_settings(**values)
    async with Engine(settings) as engine:
        app = create_app(settings, engine)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            yield c


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client():
    async with serving(attacks_per_minute=6000) as c:
        yield c


def decode(uri: str) -> np.ndarray:
    head, _, data = uri.partition(",")
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def body(**kw):
    return dict(image=fashion_samples()[0].image, labels=list(CLASSES), eps=8, steps=10) | kw


async def test_the_playground_is_off_unless_asked(make_client):
    async with make_client() as c:
        for path in ("/playground", "/playground/static/playground.js", "/playground/api/config"):
            r = await c.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "playground_disabled"
            assert "--playground" in r.json()["error"]["message"]
        r = await c.post("/playground/api/attack", json=body())
        assert r.status_code == 404


async def test_the_page_and_its_files_come_from_this_server_only(client):
    page = await client.get("/playground")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    assert (await client.head("/playground")).status_code == 200
    for name, kind in (("playground.js", "text/javascript"), ("playground.css", "text/css")):
        r = await client.get(f"/playground/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind) and len(r.text) > 500
    for bad in ("nope.js", "..%2Fapp.py", "index.htm"):
        assert (await client.get(f"/playground/static/{bad}")).status_code == 404
    # no other host anywhere in the assets: the page works offline
    for path in STATIC.iterdir():
        assert not re.search(r"(https?:)?//[a-z0-9]", path.read_text(), re.I), path.name


async def test_config_lists_models_samples_labels_and_limits(client):
    c = (await client.get("/playground/api/config")).json()
    assert c["models"] == [{"id": MODEL, "adapters": ["default"]}] and c["default_model"] == MODEL
    assert c["labels"] == list(CLASSES) and c["template"] == "a photo of a {}."
    assert len(c["samples"]) == len(SAMPLE_INDICES) and {s["model"] for s in c["samples"]} == {MODEL}
    assert len({s["image"] for s in c["samples"]}) == len(SAMPLE_INDICES)
    assert all(decode(s["image"]).shape == (28, 28, 3) for s in c["samples"])
    assert c["attack"] == {"max_eps": 16, "default_eps": 8, "max_steps": 20, "default_steps": 10,
                           "needs_admin_key": False, "per_minute": 6000.0}


async def test_no_samples_without_fashion_clip_and_limits_follow_the_settings(make_client):
    async with make_client(playground=True, attack_max_eps=4, attack_max_steps=3) as c:
        cfg = (await c.get("/playground/api/config")).json()
        assert cfg["samples"] == [] and cfg["labels"] == ["cat", "dog", "car", "airplane", "bird"]
        assert cfg["attack"]["default_eps"] == 4 and cfg["attack"]["default_steps"] == 3


async def test_every_sample_shows_standard_breaking_and_robust_holding(client):
    """The claim the samples were chosen for (scripts/playground_samples.py), at the page's defaults."""
    for sample in fashion_samples():
        r = await client.post("/playground/api/attack", json=body(image=sample.image))
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["label"] == sample.label and d["linf"] == 8 and d["target"] == "standard"
        assert d["standard"]["clean"][0]["label"] == sample.label
        assert d["standard"]["attacked"][0]["label"] != sample.label
        assert d["robust"]["clean"][0]["label"] == d["robust"]["attacked"][0]["label"] == sample.label


async def test_attack_response_images_and_adapter(client):
    d = (await client.post("/playground/api/attack", json=body(eps=6))).json()
    original, attacked, noise = (decode(d["images"][k]) for k in ("original", "attacked", "perturbation"))
    delta = attacked.astype(int) - original
    assert np.abs(delta).max() == 6 == d["linf"] and d["images"]["size"] == [28, 28]
    gain = d["images"]["magnification"]
    np.testing.assert_allclose(noise, np.clip(128 + delta * gain, 0, 255), atol=1)
    assert noise.min() < 60 and noise.max() > 200  # magnified to nearly the full range
    assert d["robust"]["adapter"] == "default" and re.fullmatch(r"[0-9a-f]{32}", d["robust"]["adapter_id"])
    assert d["standard"]["adapter"] is None and d["timings"]["attack_s"] >= d["timings"]["attack_model_s"] > 0
    adaptive = (await client.post("/playground/api/attack", json=body(eps=6, target="robust"))).json()
    assert adaptive["attack_adapter"] == "default" and adaptive["attack_adapter_id"] == d["robust"]["adapter_id"]
    assert adaptive["images"]["attacked"] != d["images"]["attacked"]


@pytest.mark.parametrize("kw, status, code", [
    (dict(eps=17), 400, "invalid_eps"), (dict(steps=21), 400, "invalid_steps"), (dict(eps=2.5), 422, None),
    (dict(eps="8"), 200, None), (dict(labels=["Bag"]), 422, None), (dict(target="both"), 422, None),
    (dict(model="nope"), 404, "model_not_found"), (dict(adapter="nope"), 404, "adapter_not_found"),
    (dict(image="bm90IGFuIGltYWdl"), 400, None), (dict(extra=1), 422, None),
    (dict(labels=["a", ""]), 422, None),
])
async def test_bad_attack_requests_get_a_clear_4xx(client, kw, status, code):
    r = await client.post("/playground/api/attack", json=body(steps=2) | kw)
    assert r.status_code == status, r.text
    if status != 200:
        err = r.json()["error"]
        assert err["message"] and (code is None or err["code"] == code)


async def test_attacks_need_the_admin_key_when_one_is_set():
    async with serving(api_key="user", admin_key="admin") as c:
        assert (await c.get("/playground")).status_code == 200  # the page itself is static
        assert (await c.get("/playground/api/config")).status_code == 401
        cfg = await c.get("/playground/api/config", headers={"authorization": "Bearer user"})
        assert cfg.status_code == 200 and cfg.json()["needs_api_key"] and cfg.json()["attack"]["needs_admin_key"]
        assert (await c.post("/playground/api/attack", json=body(steps=1))).status_code == 401
        r = await c.post("/playground/api/attack", json=body(steps=1), headers={"authorization": "Bearer user"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_api_key"
        assert "playground attacks" in r.json()["error"]["message"]
        r = await c.post("/playground/api/attack", json=body(steps=1), headers={"authorization": "Bearer admin"})
        assert r.status_code == 200


async def test_attacks_are_rate_limited_per_client():
    async with serving(attacks_per_minute=1) as c:
        codes = [(await c.post("/playground/api/attack", json=body(steps=1))).status_code for _ in range(3)]
        assert codes == [200, 200, 200]  # a burst of three
        r = await c.post("/playground/api/attack", json=body(steps=1))
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert (await c.post("/v1/classify", json={"image": body()["image"], "labels": ["a", "b"]})).status_code == 200


def test_rate_limiter_refills_and_forgets_old_clients():
    limiter = RateLimiter(per_minute=6, burst=2, capacity=2)
    assert [limiter.take("a", now=0.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("a", now=0.0) == pytest.approx(10.0)  # 6 a minute: one every 10 s
    assert limiter.take("a", now=5.0) == pytest.approx(5.0)
    assert limiter.take("a", now=10.0) == 0.0
    assert limiter.take("b", now=10.0) == 0.0 and limiter.take("c", now=10.0) == 0.0
    assert "a" not in limiter._buckets and len(limiter._buckets) == 2


async def test_config_says_503_while_the_models_load():
    settings = load_settings(models=[MODEL], device="cpu", dtype="float32", playground=True)
    engine = Engine(settings)  # not started: still "created"
    app = create_app(settings, engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        r = await c.get("/playground/api/config")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready" and r.headers["retry-after"] == "2"
        assert (await c.get("/playground")).status_code == 200  # the page itself loads and retries
    await engine.stop()
