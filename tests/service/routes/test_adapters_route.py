"""/v1/adapters: load from the directory (no traversal), upload, swap, remove, refuse misfits."""

from __future__ import annotations

import pytest

from adapters import Fingerprint, adapter_to_bytes, save_adapter
from adapters.method.anchor import Adapter
from adapters.method.config import AdapterConfig

pytestmark = [pytest.mark.api, pytest.mark.asyncio(loop_scope="session")]


def white(engine, sigma: float = 1.0, alpha: float = 0.5) -> Adapter:
    rmodel = engine.models["builtin:tiny-clip"].rmodel
    return rmodel.build_adapter(rmodel.white_anchor(), method="manual", sigma=sigma, alpha=alpha)


def foreign() -> Adapter:
    """An adapter for ViT-B/32 (50 tokens, width 768): does not fit tiny-clip."""
    fp = Fingerprint("clip_vision_model", 768, 32, 224, 50)
    import torch

    return Adapter(AdapterConfig(fingerprint=fp), torch.zeros(50, 768))


async def test_load_from_directory_swap_remove(make_client, clip_engine, tmp_path, png):
    save_adapter(white(clip_engine, 2.0, 0.25), tmp_path / "soft.safetensors")
    (tmp_path / "sub").mkdir()
    save_adapter(white(clip_engine, 0.5, 0.75), tmp_path / "sub" / "hard.safetensors")
    (tmp_path.parent / "outside.safetensors").write_bytes(adapter_to_bytes(white(clip_engine)))
    async with make_client(adapter_dir=str(tmp_path)) as client:
        resp = await client.post("/v1/adapters", json={"name": "dir-a", "path": "soft.safetensors"})
        assert resp.status_code == 201 and resp.json()["op"] == "load"
        info = resp.json()["adapter"]
        assert (info["name"], info["sigma"], info["alpha"]) == ("dir-a", 2.0, 0.25)
        first = (await client.post("/v1/classify", json={"image": png(), "labels": ["a", "b"], "adapter": "dir-a"}))
        assert first.headers["x-adapter-id"] == info["id"]
        resp = await client.post("/v1/adapters", json={"name": "dir-a", "path": "sub/hard.safetensors"})
        assert resp.status_code == 200 and resp.json()["op"] == "swap"
        second = (await client.post("/v1/classify", json={"image": png(), "labels": ["a", "b"], "adapter": "dir-a"}))
        assert second.headers["x-adapter-id"] == resp.json()["adapter"]["id"] != info["id"]
        assert first.json()["results"] != second.json()["results"]
        listed = (await client.get("/v1/adapters")).json()["data"]
        assert {"default", "dir-a"} <= {a["name"] for a in listed}
        for path in ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors"]:
            resp = await client.post("/v1/adapters", json={"name": "evil", "path": path})
            assert resp.status_code == 400 and resp.json()["error"]["code"] == "adapter_path_refused", path
        resp = await client.post("/v1/adapters", json={"name": "x", "path": "missing.safetensors"})
        assert resp.status_code == 404
        assert (await client.delete("/v1/adapters/dir-a")).json()["deleted"] is True
        resp = await client.post("/v1/classify", json={"image": png(), "labels": ["a", "b"], "adapter": "dir-a"})
        assert resp.status_code == 404
        assert (await client.delete("/v1/adapters/dir-a")).status_code == 404
        assert (await client.delete("/v1/adapters/default")).status_code == 409


async def test_upload_refuses_bad_files_and_misfits(client, png):
    async def up(name: str, data: bytes):
        return await client.post("/v1/adapters", data={"name": name}, files={"file": ("f", data)})

    resp = await up("junk", b"definitely not safetensors")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_adapter"
    resp = await up("vitb", adapter_to_bytes(foreign()))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "adapter_mismatch"
    assert "different model" in resp.json()["error"]["message"]
    resp = await up("../bad name", adapter_to_bytes(foreign()))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_adapter_name"
    resp = await client.post("/v1/adapters", content=b"x", headers={"content-type": "text/plain"})
    assert resp.status_code == 400
    resp = await client.post("/v1/adapters", json={"name": "n", "path": "p", "extra": 1})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_request"  # like every route
    assert (await client.post("/v1/classify", json={"image": png(), "labels": ["a"]})).status_code == 200


async def test_models_lists_tasks_and_adapters(client):
    data = (await client.get("/v1/models")).json()["data"]
    assert data[0]["id"] == "builtin:tiny-clip" and data[0]["family"] == "clip"
    assert set(data[0]["tasks"]) == {"classify", "embeddings"} and "default" in data[0]["adapters"]
