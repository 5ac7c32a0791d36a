"""Every bad input gets its 4xx in the one error shape, and the server keeps answering."""

from __future__ import annotations

import base64

import pytest

pytestmark = [pytest.mark.api, pytest.mark.asyncio(loop_scope="session")]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bad_requests(images) -> list[tuple[str, str, dict | bytes, int, str]]:
    ok = images.data_uri(0)
    png = images.encode(images.image_of(0, (64, 64)))
    from PIL import Image

    bomb = images.encode(Image.new("RGB", (4000, 3000)))  # a few kB that decode to 12M pixels (> 100k)
    return [
        ("malformed json", "/v1/classify", b'{"image": "x", "labels": [', 400, "invalid_json"),
        ("wrong type", "/v1/classify", {"image": ok, "labels": "cat"}, 422, "invalid_request"),
        ("unknown field", "/v1/classify", {"image": ok, "labels": ["a"], "colour": 1}, 422, "invalid_request"),
        ("missing image", "/v1/classify", {"labels": ["a"]}, 422, "invalid_request"),
        ("bad base64", "/v1/classify", {"image": "not*base64!", "labels": ["a"]}, 400, "invalid_base64"),
        ("data uri not base64", "/v1/classify", {"image": "data:image/png,abc", "labels": ["a"]}, 400,
         "invalid_image"),
        ("not an image", "/v1/classify", {"image": b64(b"hello world" * 10), "labels": ["a"]}, 400,
         "invalid_image"),
        ("truncated image", "/v1/classify", {"image": b64(png[: len(png) // 2]), "labels": ["a"]}, 400,
         "invalid_image"),
        ("too many pixels", "/v1/classify", {"image": b64(bomb), "labels": ["a"]}, 413, "image_too_many_pixels"),
        ("image too large", "/v1/classify", {"image": b64(b"\\x89PNG" + bytes(300_000)), "labels": ["a"]}, 413,
         "image_too_large"),
        ("empty labels", "/v1/classify", {"image": ok, "labels": []}, 422, "invalid_request"),
        ("empty label", "/v1/classify", {"image": ok, "labels": [""]}, 422, "invalid_request"),
        ("too many labels", "/v1/classify", {"image": ok, "labels": [f"l{i}" for i in range(11)]}, 413,
         "too_many_labels"),
        ("duplicate labels", "/v1/classify", {"image": ok, "labels": ["a", "a"]}, 400, "duplicate_labels"),
        ("label too long", "/v1/classify", {"image": ok, "labels": ["x" * 300]}, 413, "text_too_long"),
        ("template without {}", "/v1/classify", {"image": ok, "labels": ["a"], "template": "a photo"}, 400,
         "invalid_template"),
        ("top_k zero", "/v1/classify", {"image": ok, "labels": ["a"], "top_k": 0}, 422, "invalid_request"),
        ("unknown model", "/v1/classify", {"image": ok, "labels": ["a"], "model": "nope"}, 404, "model_not_found"),
        ("unknown adapter", "/v1/classify", {"image": ok, "labels": ["a"], "adapter": "nope"}, 404,
         "adapter_not_found"),
        ("robust false with adapter", "/v1/classify", {"image": ok, "labels": ["a"], "robust": False,
                                                       "adapter": "default"}, 400, "conflicting_mode"),
        ("remote url disabled", "/v1/classify", {"image": "http://example.com/cat.png", "labels": ["a"]}, 400,
         "remote_images_disabled"),
        ("embeddings empty list", "/v1/embeddings", {"input": []}, 400, "empty_input"),
        ("embeddings empty text", "/v1/embeddings", {"input": [""]}, 400, "empty_input"),
        ("embeddings token arrays", "/v1/embeddings", {"input": [[1, 2, 3]]}, 422, "invalid_request"),
        ("embeddings too many", "/v1/embeddings", {"input": ["a"] * 9}, 413, "too_many_inputs"),
        ("embeddings bad modality", "/v1/embeddings", {"input": "a", "modality": "audio"}, 422, "invalid_request"),
        ("embeddings bad image", "/v1/embeddings", {"input": ["abcd"], "modality": "image"}, 400, "invalid_image"),
        ("embeddings dimensions", "/v1/embeddings", {"input": "a", "dimensions": 8}, 400, "unsupported_parameter"),
    ]


async def test_each_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(make_client, images):
    limits = dict(max_labels=10, max_text_chars=200, max_inputs=8, max_image_pixels=100_000,
                  max_image_bytes=200_000)
    async with make_client(**limits) as client:
        for what, url, body, status, code in bad_requests(images):
            if isinstance(body, bytes):
                resp = await client.post(url, content=body, headers={"content-type": "application/json"})
            else:
                resp = await client.post(url, json=body)
            assert resp.status_code == status, (what, resp.text)
            err = resp.json()["error"]
            assert set(err) == {"message", "type", "code"} and err["code"] == code, (what, err)
            assert "Traceback" not in err["message"] and err["message"]
            ok = await client.post("/v1/classify", json={"image": images.data_uri(1), "labels": ["a", "b"]})
            assert ok.status_code == 200, what


async def test_body_limit_unknown_route_and_wrong_method(make_client, png):
    async with make_client(max_body_bytes=4096, max_image_bytes=2048) as client:
        resp = await client.post("/v1/classify", json={"image": "A" * 8000, "labels": ["a"]})
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"

        async def chunks():  # no content-length: counted as it arrives
            yield b'{"image": "'
            for _ in range(10):
                yield b"A" * 1000
            yield b'", "labels": ["a"]}'
        resp = await client.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
        assert resp.status_code == 413
        resp = await client.get("/v1/nothing")
        assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found_error"
        resp = await client.get("/v1/classify")
        assert resp.status_code == 405 and "error" in resp.json()
        assert (await client.get("/health/live")).status_code == 200


async def test_api_and_admin_keys(make_client, png):
    async with make_client(api_key="user-key", admin_key="admin-key") as client:
        body = {"image": png(), "labels": ["a", "b"]}
        assert (await client.post("/v1/classify", json=body)).status_code == 401
        bad = await client.post("/v1/classify", json=body, headers={"authorization": "Bearer wrong"})
        assert bad.status_code == 403 and bad.json()["error"]["type"] == "permission_error"
        user = {"authorization": "Bearer user-key"}
        assert (await client.post("/v1/classify", json=body, headers=user)).status_code == 200
        assert (await client.get("/health/ready")).status_code == 200  # probes need no key
        assert (await client.get("/metrics")).status_code == 200
        # adapter management needs the admin key, not the user key
        load = {"name": "k", "path": "x.safetensors"}
        assert (await client.post("/v1/adapters", json=load, headers=user)).status_code == 403
        assert (await client.delete("/v1/adapters/k", headers=user)).status_code == 403
        admin = {"authorization": "Bearer admin-key"}
        resp = await client.post("/v1/adapters", json=load, headers=admin)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "adapter_dir_unset"
