"""LLaVA and Qwen2-VL through the HTTP stack: chat, streaming, caption, VQA, batching, R-Adapt."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import pytest_asyncio

from adapters import adapter_to_bytes

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MODELS = ["builtin:tiny-llava", "builtin:tiny-qwen2-vl"]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def vlm_client():
    from service.app import create_app
    from service.engine.engine import Engine
    from service.settings import load_settings

    settings = load_settings(models=MODELS, device="cpu", dtype="float32", max_wait_ms=5.0, max_new_tokens=8,
                             max_text_chars=100_000)
    async with Engine(settings) as engine:
        app = create_app(settings, engine)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            c.engine = engine  # type: ignore[attr-defined]
            yield c


def chat(model: str, image: str | None, text: str, **kw) -> dict:
    content: list[dict] = [{"type": "text", "text": text}]
    if image is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": image}})
    return {"model": model, "messages": [{"role": "user", "content": content}], **kw}


def text_of(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("model", MODELS)
async def test_chat_shape_usage_and_robust_mode(vlm_client, png, model):
    resp = await vlm_client.post("/v1/chat/completions", json=chat(model, png(0), "What is in the image?",
                                                                   max_tokens=6, robust=False))
    body = resp.json()
    assert body["object"] == "chat.completion" and body["model"] == model
    assert body["robust"] is False and body["adapter"] is None
    usage = body["usage"]
    assert usage["completion_tokens"] == 6 and body["choices"][0]["finish_reason"] == "length"
    assert usage["total_tokens"] == usage["prompt_tokens"] + 6 and usage["prompt_tokens"] > 10
    standard = text_of(resp)
    robust = await vlm_client.post("/v1/chat/completions", json=chat(model, png(0), "What is in the image?",
                                                                     max_tokens=6, robust=True))
    assert robust.json()["robust"] is True and robust.json()["adapter"] == "default"
    assert text_of(robust) != standard
    served = vlm_client.engine.models[model]
    identity = served.rmodel.build_adapter(served.rmodel.white_anchor(), method="manual", sigma=0.0, alpha=0.0)
    up = await vlm_client.post("/v1/adapters", data={"name": "identity", "model": model},
                               files={"file": ("a", adapter_to_bytes(identity))})
    assert up.status_code == 201, up.text
    same = await vlm_client.post("/v1/chat/completions", json=chat(model, png(0), "What is in the image?",
                                                                   max_tokens=6, adapter="identity"))
    assert text_of(same) == standard and same.headers["x-adapter-id"] == up.json()["adapter"]["id"]


async def test_concurrent_mixed_generation_equals_sequential(vlm_client, png):
    bodies = []
    for i in range(8):
        model = MODELS[i % 2]
        image = None if i == 5 else png(i, (24 + 8 * i, 48 - 3 * i))
        bodies.append(chat(model, image, "Describe " * (1 + i % 3), max_tokens=3 + i, robust=bool(i % 3)))
    sequential = [text_of(await vlm_client.post("/v1/chat/completions", json=b)) for b in bodies]
    responses = await asyncio.gather(*(vlm_client.post("/v1/chat/completions", json=b) for b in bodies))
    assert [text_of(r) for r in responses] == sequential
    assert len(set(sequential)) > 4


@pytest.mark.parametrize("model", MODELS)
async def test_streaming_equals_non_streaming(vlm_client, png, model):
    body = chat(model, png(7), "Tell me about it.", max_tokens=8, robust=True)
    whole = text_of(await vlm_client.post("/v1/chat/completions", json=body))
    events = []
    async with vlm_client.stream("POST", "/v1/chat/completions",
                                 json=body | {"stream": True, "stream_options": {"include_usage": True}}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == whole and len([c for c in chunks if c["choices"]]) > 3
    final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert final[-1]["robust"] is True and final[-1]["adapter"] == "default"
    assert chunks[-1]["usage"]["completion_tokens"] == 8


async def test_caption_vqa_and_stop(vlm_client, png):
    for url, extra in [("/v1/caption", {}), ("/v1/vqa", {"question": "What colour is it?"})]:
        resp = await vlm_client.post(url, json={"model": MODELS[0], "image": png(2), "max_tokens": 5, **extra})
        body = resp.json()
        assert resp.status_code == 200 and set(body) >= {"model", "robust", "adapter", "text", "usage"}
        assert body["usage"]["completion_tokens"] == 5 and body["text"]
    base = chat(MODELS[1], png(3), "Describe", max_tokens=8)
    full = text_of(await vlm_client.post("/v1/chat/completions", json=base))
    stop = full.strip()[2:4]
    cut = await vlm_client.post("/v1/chat/completions", json=base | {"stop": [stop]})
    assert text_of(cut) == full[: full.find(stop)] and cut.json()["choices"][0]["finish_reason"] == "stop"


async def test_generation_bad_inputs(vlm_client, png):
    too_many = {"model": MODELS[0], "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png(i)}} for i in range(9)]}]}
    cases = [
        (chat(MODELS[0], "nope!", "hi"), 400, "invalid_base64"),
        (too_many, 413, "too_many_images"),
        (chat(MODELS[0], png(), "hi", max_tokens=100_000), 400, "max_tokens_too_large"),
        (chat(MODELS[1], png(), "hi " * 5000, max_tokens=4), 400, "context_length_exceeded"),
        (chat(MODELS[0], png(), "hi", n=2), 422, "invalid_request"),
        ({"model": MODELS[0], "messages": []}, 422, "invalid_request"),
        ({"model": MODELS[0], "messages": [{"role": "tool", "content": "x"}]}, 422, "invalid_request"),
        (chat("builtin:tiny-clip", png(), "hi"), 404, "model_not_found"),
        (chat(MODELS[0], png(), "hi", adapter="missing"), 404, "adapter_not_found"),
    ]
    for body, status, code in cases:
        resp = await vlm_client.post("/v1/chat/completions", json=body)
        assert resp.status_code == status and resp.json()["error"]["code"] == code, (body.get("messages"), resp.text)
    resp = await vlm_client.post("/v1/classify", json={"model": MODELS[0], "image": png(), "labels": ["a"]})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unsupported_task"
    assert text_of(await vlm_client.post("/v1/chat/completions", json=chat(MODELS[1], png(), "ok", max_tokens=2)))


async def test_qwen2_5_and_qwen3_vl_batch_and_adapt(png):
    """Window attention (2.5) and deepstack (3) through the same runner: batched == one at a time."""
    from service.app import create_app
    from service.engine.engine import Engine
    from service.settings import load_settings

    models = ["builtin:tiny-qwen2.5-vl", "builtin:tiny-qwen3-vl"]
    settings = load_settings(models=models, device="cpu", dtype="float32", max_wait_ms=5.0)
    async with Engine(settings) as engine:
        app = create_app(settings, engine)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            bodies = [chat(models[i % 2], png(i, (20 + 9 * i, 40)), "what " * (1 + i), max_tokens=4 + i,
                           robust=bool(i % 3)) for i in range(6)]
            sequential = [text_of(await client.post("/v1/chat/completions", json=b)) for b in bodies]
            together = await asyncio.gather(*(client.post("/v1/chat/completions", json=b) for b in bodies))
            assert [text_of(r) for r in together] == sequential
            for model in models:
                answers = [(await client.post("/v1/caption", json={"model": model, "image": png(9), "max_tokens": 6,
                                                                   "robust": robust})).json() for robust in (0, 1)]
                assert answers[0]["text"] != answers[1]["text"] and answers[1]["adapter"] == "default"
