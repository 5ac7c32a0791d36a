"""Hardening findings at the HTTP edge (issue 9): each a clear 4xx, and the server serves on after it."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from adapters import adapter_to_bytes, save_adapter

pytestmark = [pytest.mark.api, pytest.mark.asyncio(loop_scope="session")]


def b64png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def still_serves(client, png) -> None:
    resp = await client.post("/v1/classify", json={"image": png(3, (8, 8)), "labels": ["a", "b"]})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("size", [(2, 600), (3000, 4)])
async def test_thin_and_wide_images_are_refused_before_any_resize(client, png, size):
    """Finding 1: a 2x600 strip would be resized to 32x9600 (at 224 px: 224x67200); refused at decode."""
    for route, body in (("/v1/classify", {"labels": ["a", "b"]}), ("/v1/embeddings", {"modality": "image"})):
        image = b64png(Image.new("RGB", size, (200, 10, 10)))
        body = {**body, "image": image} if route == "/v1/classify" else {**body, "input": [image]}
        resp = await client.post(route, json=body)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["code"] == "image_aspect_ratio"
        assert "aspect ratio" in resp.json()["error"]["message"]
    await still_serves(client, png)


async def test_moderately_wide_images_still_work(client):
    resp = await client.post("/v1/classify", json={"image": b64png(Image.new("RGB", (400, 40))), "labels": ["a"]})
    assert resp.status_code == 200, resp.text


async def test_exif_orientation_is_applied(client):
    """Finding 5: a photo stored landscape with EXIF 'rotate 90' reaches the model upright."""
    rs = Image.effect_noise((40, 24), 80).convert("RGB")
    turned = rs.transpose(Image.Transpose.ROTATE_270)  # what the camera would show, upright
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    buf = io.BytesIO()
    rs.save(buf, "PNG", exif=exif)
    tagged = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    labels = ["a", "b", "c", "d"]
    got = (await client.post("/v1/embeddings", json={"input": [tagged], "modality": "image"})).json()
    upright = (await client.post("/v1/embeddings", json={"input": [b64png(turned)], "modality": "image"})).json()
    raw = (await client.post("/v1/embeddings", json={"input": [b64png(rs)], "modality": "image"})).json()
    assert got["data"][0]["embedding"] == upright["data"][0]["embedding"]
    assert got["data"][0]["embedding"] != raw["data"][0]["embedding"]
    assert (await client.post("/v1/classify", json={"image": tagged, "labels": labels})).status_code == 200


async def test_nul_byte_in_adapter_path_is_a_4xx_and_keeps_the_connection(make_client, clip_engine, tmp_path, png):
    """Finding 4: a NUL byte in an adapter path was a 500."""
    rmodel = clip_engine.models["builtin:tiny-clip"].rmodel
    save_adapter(rmodel.build_adapter(rmodel.white_anchor(), method="manual"), tmp_path / "ok.safetensors")
    async with make_client(adapter_dir=str(tmp_path)) as client:
        for path in ["ok.safetensors\x00.txt", "\x00", "a\nb", "x" * 1000 + "/" + "y" * 10]:
            resp = await client.post("/v1/adapters", json={"name": "nul", "path": path})
            assert 400 <= resp.status_code < 500, (path, resp.text)
            assert resp.json()["error"]["code"] in ("invalid_request", "adapter_path_refused", "adapter_file_not_found")
        await still_serves(client, png)


@pytest.mark.parametrize("body", [b'{"image": "\xff\xfe", "labels": ["a"]}', b"\xff" * 20])
async def test_undecodable_bodies_are_invalid_json(client, png, body):
    """Finding 6: a body that is not UTF-8 JSON got http_400."""
    for route in ("/v1/classify", "/v1/embeddings", "/v1/chat/completions", "/v1/adapters"):
        resp = await client.post(route, content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 400, (route, resp.text)
        assert resp.json()["error"]["code"] == "invalid_json", (route, resp.text)
    await still_serves(client, png)


async def test_chunked_oversize_body_is_payload_too_large(make_client, png):
    """Finding 6: a body without content-length that grows past the limit got http_413."""
    async with make_client(max_body_bytes=4096, max_image_bytes=2048) as client:
        for route in ("/v1/classify", "/v1/adapters", "/v1/embeddings"):
            async def chunks():
                yield b'{"image": "'
                for _ in range(10):
                    yield b"A" * 1000
                yield b'", "labels": ["a"]}'
            resp = await client.post(route, content=chunks(), headers={"content-type": "application/json"})
            assert resp.status_code == 413, (route, resp.text)
            assert resp.json()["error"]["code"] == "payload_too_large", (route, resp.text)

        async def upload():
            yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
            for _ in range(10):
                yield b"A" * 1000
            yield b"\r\n--xyz--\r\n"
        resp = await client.post("/v1/adapters", content=upload(),
                                 headers={"content-type": "multipart/form-data; boundary=xyz"})
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large", resp.text
        await still_serves(client, png)


async def test_adapter_json_bodies_are_validated_like_every_route(make_client, tmp_path):
    """Finding 6: POST /v1/adapters answered a hand-rolled 400 where other routes answer 422."""
    async with make_client(adapter_dir=str(tmp_path)) as client:
        for body in ({"name": "n"}, {"name": "n", "path": 3}, {"name": "n", "path": "p", "extra": 1}):
            resp = await client.post("/v1/adapters", json=body)
            assert resp.status_code == 422, resp.text
            assert resp.json()["error"]["code"] == "invalid_request"
        resp = await client.post("/v1/adapters", content=b'{"name": ', headers={"content-type": "application/json"})
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"


async def test_models_report_dtype_and_device(client):
    """Finding 8: /v1/models says what each model runs in."""
    data = (await client.get("/v1/models")).json()["data"][0]
    assert data["dtype"] == "float32" and data["device"] == "cpu"


async def test_docs_are_served_without_a_cdn(client):
    """Finding 9: /docs loaded Swagger UI from a CDN (blank offline)."""
    page = (await client.get("/docs")).text
    assert "cdn.jsdelivr" not in page and "unpkg" not in page
    js = [part.split('"')[0] for part in page.split('src="')[1:]]
    assert js and all(src.startswith("/") for src in js), js
    for src in js:
        resp = await client.get(src)
        assert resp.status_code == 200 and len(resp.content) > 10_000, src
    assert (await client.get("/redoc")).status_code == 200


async def test_upload_of_an_adapter_that_cannot_run_is_refused(client, clip_engine, png):
    """Finding 2: an anchor with the wrong number of rows uploaded with 201 and failed every batch."""
    import torch

    from adapters.method.anchor import Adapter
    from adapters.method.config import AdapterConfig

    rmodel = clip_engine.models["builtin:tiny-clip"].rmodel
    good = rmodel.build_adapter(rmodel.white_anchor(), method="manual")
    bad_rows = Adapter(AdapterConfig(fingerprint=good.config.fingerprint), torch.zeros(5, good.anchor.shape[1]))
    data = adapter_to_bytes(bad_rows)
    resp = await client.post("/v1/adapters", data={"name": "rows"}, files={"file": ("f", data)})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_adapter", resp.text
    assert "rows" in resp.json()["error"]["message"]
    resp = await client.post("/v1/classify", json={"image": png(), "labels": ["a"], "adapter": "rows"})
    assert resp.status_code == 404
    await still_serves(client, png)


async def test_malformed_multipart_upload_is_invalid_upload(client, png):
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    for body in (b"--xyz\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--xyz--\r\n", b"garbage"):
        resp = await client.post("/v1/adapters", content=body, headers=headers)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_upload", resp.text
    await still_serves(client, png)
