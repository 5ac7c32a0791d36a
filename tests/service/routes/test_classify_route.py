"""POST /v1/classify: equals plain transformers, robust mode, mixed concurrency, hot-swap."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

from adapters import adapter_to_bytes
from adapters.method.anchor import Adapter

pytestmark = [pytest.mark.api, pytest.mark.asyncio(loop_scope="session")]

LABELS = ["a cat", "a dog", "a car", "a tree", "the sea"]


def scores(resp) -> dict[str, float]:
    assert resp.status_code == 200, resp.text
    return {r["label"]: r["score"] for r in resp.json()["results"]}


async def upload(client, name: str, adapter: Adapter) -> dict:
    files = {"file": ("a.safetensors", adapter_to_bytes(adapter), "application/octet-stream")}
    resp = await client.post("/v1/adapters", data={"name": name}, files=files)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()["adapter"]


def variant(engine, sigma: float, alpha: float) -> Adapter:
    """An adapter for the served tiny-clip with the white anchor and the given sigma/alpha."""
    served = engine.models["builtin:tiny-clip"]
    return served.rmodel.build_adapter(served.rmodel.white_anchor(), method="manual", sigma=sigma, alpha=alpha)


async def test_standard_mode_equals_plain_transformers(client, images):
    from transformers import CLIPModel, CLIPProcessor

    from adapters import zoo

    folder = zoo.ensure_exported("builtin:tiny-clip")
    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    for seed, size, template in [(0, (40, 30), None), (1, (64, 64), "{}"), (2, (23, 77), "an image of {}")]:
        img = images.image_of(seed, size)
        body = {"image": images.data_uri(seed, size), "labels": LABELS, "robust": False}
        if template:
            body["template"] = template
        got = scores(await client.post("/v1/classify", json=body))
        prompts = [(template or "a photo of a {}.").replace("{}", label) for label in LABELS]
        with torch.no_grad():
            out = model(**processor(text=prompts, images=img, return_tensors="pt", padding=True))
        want = out.logits_per_image.softmax(-1)[0].tolist()
        assert list(got) == [label for _, label in sorted(zip(want, LABELS, strict=True), reverse=True)]
        for label, w in zip(LABELS, want, strict=True):
            assert abs(got[label] - w) <= 1e-5


async def test_response_shape_sorting_and_top_k(client, png):
    resp = await client.post("/v1/classify", json={"image": png(3), "labels": LABELS, "top_k": 2})
    body = resp.json()
    assert body["model"] == "builtin:tiny-clip" and body["robust"] is False and body["adapter"] is None
    assert len(body["results"]) == 2 and body["results"][0]["score"] >= body["results"][1]["score"]
    assert float(resp.headers["x-queue-time"]) >= 0 and float(resp.headers["x-inference-time"]) > 0
    full = scores(await client.post("/v1/classify", json={"image": png(3), "labels": LABELS}))
    assert abs(sum(full.values()) - 1.0) < 1e-5


async def test_robust_changes_answer_and_identity_adapter_equals_standard(client, clip_engine, png):
    body = {"image": png(4), "labels": LABELS}
    standard = scores(await client.post("/v1/classify", json=body | {"robust": False}))
    resp = await client.post("/v1/classify", json=body | {"robust": True})
    assert resp.json()["robust"] is True and resp.json()["adapter"] == "default"
    robust = scores(resp)
    assert max(abs(robust[k] - standard[k]) for k in LABELS) > 1e-4
    await upload(client, "identity", variant(clip_engine, sigma=0.0, alpha=0.0))
    resp = await client.post("/v1/classify", json=body | {"adapter": "identity"})
    assert resp.json()["robust"] is True and resp.json()["adapter"] == "identity"
    assert scores(resp) == standard
    # filter only and anchor only each change the answer too
    for name, (sigma, alpha) in {"blur": (1.5, 0.0), "anchor": (0.0, 0.7)}.items():
        await upload(client, name, variant(clip_engine, sigma, alpha))
        got = scores(await client.post("/v1/classify", json=body | {"adapter": name}))
        assert max(abs(got[k] - standard[k]) for k in LABELS) > 1e-5


async def test_concurrent_mixed_requests_equal_sequential(client, clip_engine, png):
    await upload(client, "mixed-a", variant(clip_engine, sigma=2.0, alpha=0.3))
    requests = []
    for i in range(24):
        mode = [{"robust": False}, {"robust": True}, {"adapter": "mixed-a"}, {}][i % 4]
        labels = LABELS[: 2 + i % 4] if i % 3 else ["x" + str(i), "y"]
        requests.append(("/v1/classify", {"image": png(10 + i % 7, (30 + i, 40)), "labels": labels} | mode))
        if i % 4 == 0:
            requests.append(("/v1/embeddings", {"input": [png(i)], "modality": "image"} | mode))
            requests.append(("/v1/embeddings", {"input": [f"text {i}", "more"]}))
    sequential = [(await client.post(url, json=b)).json() for url, b in requests]
    batches_before = _batches(clip_engine)
    concurrent = [r.json() for r in await asyncio.gather(*(client.post(url, json=b) for url, b in requests))]
    assert _batches(clip_engine) - batches_before < len(requests)  # some requests really shared a forward
    for seq, con in zip(sequential, concurrent, strict=True):
        assert seq.keys() == con.keys() and seq.get("adapter") == con.get("adapter")
        if "results" in seq:
            assert [r["label"] for r in seq["results"]] == [r["label"] for r in con["results"]]
            pairs = zip(seq["results"], con["results"], strict=True)
            assert all(abs(a["score"] - b["score"]) <= 1e-5 for a, b in pairs)
        else:
            for a, b in zip(seq["data"], con["data"], strict=True):
                assert max(abs(x - y) for x, y in zip(a["embedding"], b["embedding"], strict=True)) <= 1e-5


def _batches(engine) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(engine.metrics.render().decode()):
        if family.name == "radapt_batch_size":
            return sum(s.value for s in family.samples if s.name.endswith("_count"))
    return 0.0


async def test_hot_swap_under_load_never_fails_and_names_the_adapter(client, clip_engine, png):
    pair = (variant(clip_engine, sigma=0.0, alpha=0.0), variant(clip_engine, sigma=3.0, alpha=0.9))
    body = {"image": png(5), "labels": LABELS, "adapter": "hot"}
    which: dict[str, int] = {}  # adapter id -> index in pair (every upload gets a new id)
    answers = []
    for k, adapter in enumerate(pair):  # what each adapter answers on its own
        which[(await upload(client, "hot", adapter))["id"]] = k
        answers.append(scores(await client.post("/v1/classify", json=body)))
    assert max(abs(answers[0][x] - answers[1][x]) for x in LABELS) > 1e-3
    rng = random.Random(0)

    async def swapper():
        for k in range(12):
            which[(await upload(client, "hot", pair[k % 2]))["id"]] = k % 2
            await asyncio.sleep(rng.random() * 0.01)

    async def caller():
        return [await client.post("/v1/classify", json=body) for _ in range(6)]

    results = await asyncio.gather(swapper(), *(caller() for _ in range(5)))
    responses = [r for batch in results[1:] for r in batch]
    assert all(r.status_code == 200 for r in responses)
    seen = set()
    for r in responses:
        assert r.json()["adapter"] == "hot"
        k = which[r.headers["x-adapter-id"]]
        got = scores(r)
        assert max(abs(got[x] - answers[k][x]) for x in LABELS) <= 1e-5
        seen.add(k)
    assert seen == {0, 1}
