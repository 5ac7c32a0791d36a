"""The adapter store shared by replicas: two apps (two engines) in one process on one directory;
each sync round is driven by hand (``sync_once``), so nothing here waits on a timer."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters import adapter_to_bytes
from service.store_backends import DirStore, StoreUnavailable, open_store
from tests.service.conftest import clip_settings
from tests.service.routes.test_adapters_route import foreign, white

pytestmark = [pytest.mark.api, pytest.mark.asyncio(loop_scope="session")]
MODEL = "builtin:tiny-clip"


@contextlib.asynccontextmanager
async def replica(store: Path, **overrides: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """A tiny-CLIP app on ``store``: its client and its AdapterSync (first sync done)."""
    from service.app import create_app
    from service.engine.engine import Engine

    settings = clip_settings(warmup=False, adapter_store=str(store), **overrides)
    async with Engine(settings) as engine:
        app = create_app(settings, engine)
        sync = app.state.adapter_sync
        await sync.sync_once()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            yield c, sync


async def upload(client: httpx.AsyncClient, name: str, data: bytes) -> httpx.Response:
    return await client.post("/v1/adapters", data={"name": name}, files={"file": ("f", data)})


async def names(client: httpx.AsyncClient) -> set[str]:
    return {a["name"] for a in (await client.get("/v1/adapters")).json()["data"]}


def test_dir_store_round_trip_is_atomic_and_content_addressed(tmp_path):
    store = open_store(str(tmp_path))
    assert isinstance(store, DirStore)
    ref = store.put("org/model:x", "a", b"one")
    assert store.refs() == [ref] and store.read_blob(ref.sha256) == b"one"
    again = store.put("org/model:x", "a", b"two")  # last writer wins
    assert again.sha256 != ref.sha256 and [r.sha256 for r in store.refs()] == [again.sha256]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # no temp file left behind
    assert store.delete("org/model:x", "a") and not store.delete("org/model:x", "a") and store.refs() == []
    with pytest.raises(StoreUnavailable):  # an unmounted volume is not "every adapter deleted"
        DirStore(tmp_path / "not-mounted").refs()


def test_a_put_of_the_same_bytes_repairs_a_corrupt_blob(tmp_path):
    """Content addressing must not trust a blob that is there: a truncated copy is rewritten by the next put
    of the right bytes (the same bytes, so the same sha256; no reliance on the file's bytes differing)."""
    store = DirStore(tmp_path)
    ref = store.put("m", "a", b"the adapter bytes")
    blob = tmp_path / "blobs" / f"{ref.sha256}.safetensors"
    blob.write_bytes(b"the adap")  # truncated after it was written
    assert store.put("m", "a", b"the adapter bytes").sha256 == ref.sha256
    assert store.read_blob(ref.sha256) == b"the adapter bytes"


async def test_upload_on_one_replica_is_served_by_the_other_and_delete_propagates(tmp_path, clip_engine, png):
    data = adapter_to_bytes(white(clip_engine, 2.0, 0.25))
    async with replica(tmp_path) as (a, sync_a), replica(tmp_path) as (b, sync_b):
        resp = await upload(a, "shared", data)
        assert resp.status_code == 201, resp.text
        digest = resp.json()["adapter"]["digest"]
        assert len(digest) == 64
        assert "shared" in await names(a) and "shared" not in await names(b)
        await sync_b.sync_once()
        await sync_a.sync_once()  # the version is the store as of a replica's last round
        listed = (await b.get("/v1/adapters")).json()
        assert {x["name"]: x["digest"] for x in listed["data"]}["shared"] == digest
        assert listed["store"]["version"] == (await a.get("/v1/adapters")).json()["store"]["version"] != ""
        body = {"image": png(), "labels": ["a", "b"], "adapter": "shared"}
        ra, rb = await a.post("/v1/classify", json=body), await b.post("/v1/classify", json=body)
        assert ra.status_code == rb.status_code == 200 and ra.json()["results"] == rb.json()["results"]
        # delete on B leaves A after its next round
        assert (await b.delete("/v1/adapters/shared")).status_code == 200
        assert "shared" not in await names(b) and "shared" in await names(a)
        await sync_a.sync_once()
        assert "shared" not in await names(a) and "default" in await names(a)
        assert (await a.post("/v1/classify", json=body)).status_code == 404
    async with replica(tmp_path) as (c, _):  # a fresh replica starts with what the store has (nothing now)
        assert await names(c) == {"default"}


async def test_corrupt_and_misfit_files_are_refused_and_reported(tmp_path, clip_engine, png):
    good = adapter_to_bytes(white(clip_engine, 0.5, 0.75))
    store = DirStore(tmp_path)
    store.put(MODEL, "good", good)
    bad = store.put(MODEL, "bad", adapter_to_bytes(white(clip_engine, 1.5, 0.5)))
    blob = tmp_path / "blobs" / f"{bad.sha256}.safetensors"
    blob.write_bytes(blob.read_bytes()[:-10])  # truncated after it was written
    store.put(MODEL, "misfit", adapter_to_bytes(foreign()))
    (tmp_path / "refs" / "builtin%3Atiny-clip" / "junk.json").write_text("{not json")
    async with replica(tmp_path) as (client, sync):
        assert await names(client) == {"default", "good"}
        refused = {r["name"]: r["reason"] for r in (await client.get("/v1/adapters")).json()["store"]["refused"]}
        assert set(refused) == {"bad", "misfit", "junk"}
        assert "sha256" in refused["bad"] and "does not fit" in refused["misfit"] and "JSON" in refused["junk"]
        metrics = (await client.get("/metrics")).text
        assert "radapt_adapter_store_refused 3.0" in metrics and "radapt_adapter_store_up 1.0" in metrics
        body = {"image": png(), "labels": ["a", "b"], "adapter": "bad"}
        assert (await client.post("/v1/classify", json=body)).status_code == 404
        # a good version under a refused name is taken up by the next round; deleting a refused one works
        store.put(MODEL, "bad", adapter_to_bytes(white(clip_engine, 1.5, 0.5)))
        await sync.sync_once()
        assert await names(client) == {"default", "good", "bad"}
        assert (await client.delete("/v1/adapters/misfit")).status_code == 200
        assert {r["name"] for r in sync.status()["refused"]} == {"junk"}


async def test_store_unreachable_keeps_serving_and_is_reported(tmp_path, clip_engine, png):
    root = tmp_path / "volume"
    root.mkdir()
    DirStore(root).put(MODEL, "kept", adapter_to_bytes(white(clip_engine, 1.0, 0.3)))
    async with replica(root) as (client, sync):
        root.rename(tmp_path / "gone")  # the volume goes away
        await sync.sync_once()
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["adapter_store"]["reachable"] is False and "not a directory" in ready.json()[
            "adapter_store"]["error"]
        assert "radapt_adapter_store_up 0.0" in (await client.get("/metrics")).text
        body = {"image": png(), "labels": ["a", "b"], "adapter": "kept"}
        assert (await client.post("/v1/classify", json=body)).status_code == 200
        resp = await upload(client, "new", adapter_to_bytes(white(clip_engine)))
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "adapter_store_unavailable"
        assert "new" not in await names(client)
        (tmp_path / "gone").rename(root)
        await sync.sync_once()
        assert (await client.get("/health/ready")).json()["adapter_store"]["reachable"] is True


async def test_misfit_upload_is_never_written_to_the_store(tmp_path):
    async with replica(tmp_path) as (client, _):
        resp = await upload(client, "misfit", adapter_to_bytes(foreign()))
        assert resp.status_code == 400
        assert DirStore(tmp_path).refs() == [] and not (tmp_path / "blobs").exists()
        ref_json = json.dumps(sorted(p.name for p in tmp_path.rglob("*")))
        assert "misfit" not in ref_json


def test_an_object_store_url_needs_its_driver_at_start():
    from service.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="adapter_store.*fsspec"):
        load_settings(adapter_store="nosuchprotocol://bucket/prefix")
    assert load_settings(adapter_store="/srv/store").adapter_store == "/srv/store"


async def test_a_scan_that_overlaps_an_admin_write_is_dropped(tmp_path, clip_engine):
    """A round that listed the store before an upload landed must not unload the upload."""
    import asyncio
    import threading

    async with replica(tmp_path) as (client, sync):
        listed, release = threading.Event(), threading.Event()
        real = sync.backend.refs

        def slow_refs():
            refs = real()  # the store before the upload
            listed.set()
            release.wait(10)
            return refs
        sync.backend.refs = slow_refs
        scan = asyncio.create_task(sync.sync_once())
        while not listed.is_set():
            await asyncio.sleep(0.01)
        sync.backend.refs = real
        assert (await upload(client, "racing", adapter_to_bytes(white(clip_engine, 1.2, 0.4)))).status_code == 201
        release.set()
        await scan
        assert "racing" in await names(client)  # the stale round changed nothing
        await sync.sync_once()
        assert "racing" in await names(client)
