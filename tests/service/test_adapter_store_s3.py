"""The adapter store on an object store (fsspec + s3fs) against a local S3-compatible server (moto's
server mode, on loopback, started here): two replicas converge, a corrupt blob is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from adapters import adapter_to_bytes
from service.store_backends import FsspecStore, StoreUnavailable, open_store
from tests.service.routes.test_adapters_route import white
from tests.service.test_adapter_sync import names, replica, upload

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
pytestmark = [pytest.mark.api, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture()
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty bucket on a moto S3 server on 127.0.0.1 (credentials and endpoint from the environment,
    as a deployment would pass them); the URL of a prefix in it."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            monkeypatch.setenv(key, value)
        import s3fs

        name = f"adapters-{uuid.uuid4().hex[:12]}"  # moto's state outlives one server in this process
        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(name)
        yield f"s3://{name}/radapt"
    finally:
        server.stop()


def test_object_store_round_trip(bucket):
    store = open_store(bucket)
    assert isinstance(store, FsspecStore) and store.refs() == []
    ref = store.put("org/model:x", "a", b"one")
    assert store.refs() == [ref] and store.read_blob(ref.sha256) == b"one"
    assert store.put("org/model:x", "a", b"two").sha256 == store.refs()[0].sha256 != ref.sha256
    assert store.delete("org/model:x", "a") and store.refs() == [] and not store.delete("org/model:x", "a")
    with pytest.raises(StoreUnavailable):  # a missing bucket is not an empty store
        open_store("s3://no-such-bucket-radapt/x").refs()


async def test_replicas_converge_through_an_object_store(bucket, clip_engine, png):
    async with replica(bucket) as (a, sync_a), replica(bucket) as (b, sync_b):
        resp = await upload(a, "s3-shared", adapter_to_bytes(white(clip_engine, 2.0, 0.25)))
        assert resp.status_code == 201, resp.text
        await sync_b.sync_once()
        assert "s3-shared" in await names(b)
        body = {"image": png(), "labels": ["a", "b"], "adapter": "s3-shared"}
        assert (await a.post("/v1/classify", json=body)).json() == (await b.post("/v1/classify", json=body)).json()
        # a blob overwritten with other bytes no longer matches its name: refused by a fresh replica
        store = open_store(bucket)
        digest = resp.json()["adapter"]["digest"]
        store.fs.pipe_file(f"{store.base}/blobs/{digest}.safetensors", b"garbage")
        async with replica(bucket) as (c, _):
            assert await names(c) == {"default"}
            refused = (await c.get("/v1/adapters")).json()["store"]["refused"]
            assert [(r["name"], "sha256" in r["reason"]) for r in refused] == [("s3-shared", True)]
        assert (await b.delete("/v1/adapters/s3-shared")).status_code == 200
        await sync_a.sync_once()
        assert await names(a) == {"default"} and store.refs() == []
        assert (await a.get("/v1/adapters")).json()["store"]["url"] == bucket
