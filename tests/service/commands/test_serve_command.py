"""`radapt serve` for real: a uvicorn subprocess on loopback, the official openai client, streaming."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration

CHAT_MODELS = ["builtin:tiny-llava", "builtin:tiny-qwen2-vl"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, free_port):
    port = free_port()
    models = ["builtin:tiny-clip", *CHAT_MODELS]
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w+")
    cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--device", "cpu", "--max-wait-ms", "5"]
    for m in models:
        cmd += ["--model", m]
    env = dict(os.environ, RADAPT_API_KEY="test-key", RADAPT_MAX_NEW_TOKENS="8")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    try:
        while True:
            assert proc.poll() is None, _tail(log)
            try:
                if httpx.get(base + "/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() - start < 180, "server never became ready:\n" + _tail(log)
            time.sleep(0.2)
        print(f"radapt serve ready after {time.monotonic() - start:.1f} s with {models}")
        yield base, CHAT_MODELS
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _tail(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-3000:]


def data_uri(seed: int) -> str:
    import io

    from PIL import Image

    img = Image.fromarray(np.random.RandomState(seed).randint(0, 256, (30, 40, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def openai_client(base: str, key: str = "test-key"):
    import openai

    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)


def test_curl_style_classify_and_auth(server):
    base, _ = server
    body = {"image": data_uri(0), "labels": ["cat", "dog"], "robust": True}
    assert httpx.post(base + "/v1/classify", json=body).status_code == 401
    resp = httpx.post(base + "/v1/classify", json=body, headers={"authorization": "Bearer test-key"})
    assert resp.status_code == 200 and resp.json()["robust"] is True
    assert float(resp.headers["x-inference-time"]) > 0
    assert "radapt_requests_total" in httpx.get(base + "/metrics").text


def test_openai_embeddings_text_and_image(server):
    import openai

    base, _ = server
    client = openai_client(base)
    out = client.embeddings.create(model="builtin:tiny-clip", input=["a cat", "a dog"])
    vecs = [np.array(d.embedding) for d in out.data]
    assert len(vecs) == 2 and abs(np.linalg.norm(vecs[0]) - 1) < 1e-4 and not np.allclose(vecs[0], vecs[1])
    assert out.usage.prompt_tokens > 0
    images = [data_uri(1)]
    std = client.embeddings.create(model="builtin:tiny-clip", input=images, extra_body={"modality": "image"})
    rob = client.embeddings.create(model="builtin:tiny-clip", input=images,
                                   extra_body={"modality": "image", "robust": True})
    a, b = np.array(std.data[0].embedding), np.array(rob.data[0].embedding)
    assert a.shape == b.shape and not np.allclose(a, b)
    floats = client.embeddings.create(model="builtin:tiny-clip", input=images, encoding_format="float",
                                      extra_body={"modality": "image"})
    assert np.allclose(floats.data[0].embedding, a, atol=1e-6)
    with pytest.raises(openai.PermissionDeniedError):
        openai_client(base, key="wrong").embeddings.create(model="builtin:tiny-clip", input="x")


def test_openai_chat_and_streaming(server):
    import openai

    base, chat_models = server
    client = openai_client(base)
    for model in chat_models:
        messages = [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_uri(2)}},
            {"type": "text", "text": "What is in this picture?"}]}]
        done = client.chat.completions.create(model=model, messages=messages, max_tokens=6,
                                              extra_body={"robust": True})
        text = done.choices[0].message.content
        assert done.usage.completion_tokens == 6 and done.choices[0].finish_reason == "length" and text
        stream = client.chat.completions.create(model=model, messages=messages, max_tokens=6, stream=True,
                                                stream_options={"include_usage": True}, extra_body={"robust": True})
        pieces, usage = [], None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
        assert "".join(pieces) == text and len(pieces) > 1 and usage.completion_tokens == 6
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=chat_models[0], max_tokens=4, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])


def test_bad_settings_exit_with_a_message():
    proc = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--max-batch-size", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "RADAPT_MAX_BATCH_SIZE" in proc.stderr


def test_openai_client_defaults_and_newer_fields(server):
    """What the openai client and its users send: developer role, seed, penalties, models.retrieve."""
    import openai

    base, chat_models = server
    client = openai_client(base)
    model = client.models.retrieve(chat_models[1])
    assert model.id == chat_models[1] and model.created > 0 and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    messages = [{"role": "developer", "content": "Answer briefly."},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri(3)}},
                                             {"type": "text", "text": "What is it?"}]}]
    kw = dict(model=chat_models[0], messages=messages, max_tokens=10, temperature=0.9, seed=7, presence_penalty=0.5,
              frequency_penalty=0.5)
    first = client.chat.completions.create(**kw).choices[0].message.content
    assert client.chat.completions.create(**kw).choices[0].message.content == first
    other = {client.chat.completions.create(**(kw | {"seed": s})).choices[0].message.content for s in range(3)}
    assert len(other) >= 2
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**(kw | {"temperature": 1e-40}))
    assert err.value.code == "invalid_temperature"
    final = [c for c in client.chat.completions.create(**kw, stream=True) if c.choices and c.choices[0].finish_reason]
    extra = final[-1].model_extra
    assert final[-1].choices[0].finish_reason == "length" and extra["robust"] is False
    assert extra["timings"]["inference_time"] > 0 and "adapter_id" in extra


def test_a_poisoned_request_beside_greedy_ones_fails_alone(server):
    """The issue's finding: temperature 1e-40 once failed 32 of 36 greedy requests sent alongside it."""
    from concurrent.futures import ThreadPoolExecutor

    base, chat_models = server
    headers = {"authorization": "Bearer test-key"}
    greedy = {"model": chat_models[0], "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]}
    poison = greedy | {"temperature": 1e-40}
    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(httpx.post, base + "/v1/chat/completions", json=poison if i % 6 == 0 else greedy,
                               headers=headers, timeout=60) for i in range(24)]
        answers = [f.result() for f in futures]
    texts = {r.json()["choices"][0]["message"]["content"] for i, r in enumerate(answers) if i % 6}
    assert all(r.status_code == 200 for i, r in enumerate(answers) if i % 6) and len(texts) == 1
    assert all(r.status_code == 400 and r.json()["error"]["code"] == "invalid_temperature"
               for i, r in enumerate(answers) if i % 6 == 0)
