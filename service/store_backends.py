"""Where replicas share their adapters: a directory (a shared volume) or an object store (fsspec).

Layout, the same in both (content-addressed; a ref names the blob an adapter is now)::

    blobs/<sha256>.safetensors            the adapter file; its name is the sha256 of its bytes
    refs/<quoted model>/<name>.json       {"model", "name", "sha256", "updated"}

A write puts the blob first, then the ref, each atomically (directory: a temp name in the same
folder, fsync, ``os.replace``; object stores: one PUT), so no reader ever sees a ref to a missing or
half-written blob from a live writer. Two writers of one name: the last ref written wins. A delete
removes the ref; blobs are never needed again once no ref names them and are left (tiny) for
``radapt`` to collect later. Every call may block: callers run them in a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

from adapters.method.io import MAX_ADAPTER_BYTES


class StoreUnavailable(OSError):
    """The store cannot be listed, read or written right now (unmounted, network, credentials)."""


@dataclass(frozen=True)
class Ref:
    """One adapter of the store: ``sha256`` names its blob."""

    model: str
    name: str
    sha256: str
    updated: float = 0.0


class Backend(Protocol):
    url: str

    def refs(self) -> list[Ref]: ...
    def read_blob(self, sha256: str) -> bytes: ...
    def put(self, model: str, name: str, data: bytes) -> Ref: ...
    def delete(self, model: str, name: str) -> bool: ...


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ref_key(model: str, name: str) -> str:
    return f"refs/{quote(model, safe='')}/{name}.json"


def _ref_bytes(ref: Ref) -> bytes:
    return json.dumps({"model": ref.model, "name": ref.name, "sha256": ref.sha256, "updated": ref.updated}).encode()


def _parse_ref(data: bytes, model_dir: str, file_name: str) -> Ref:
    """A ref file; one that cannot be read comes back with an empty sha256 (reported, never served)."""
    name = file_name[: -len(".json")]
    try:
        raw = json.loads(data)
        sha, updated = str(raw["sha256"]), float(raw.get("updated", 0.0))
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError("sha256 is not 64 hex digits")
    except (ValueError, KeyError, TypeError):
        sha, updated = "", 0.0
    return Ref(unquote(model_dir), name, sha, updated)


class DirStore:
    """A store in a local or mounted directory (a ReadWriteMany volume shared by the replicas)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def _mounted(self) -> None:
        """An unmounted volume must neither read as "every adapter was deleted" nor be recreated."""
        if not self.root.is_dir():
            raise StoreUnavailable(f"adapter store {self.root} is not a directory (not mounted?)")

    def refs(self) -> list[Ref]:
        refs_dir = self.root / "refs"
        self._mounted()
        out = []
        try:
            for model_dir in sorted(p for p in refs_dir.iterdir() if p.is_dir()) if refs_dir.is_dir() else []:
                for path in sorted(model_dir.glob("*.json")):
                    with contextlib.suppress(FileNotFoundError):  # deleted while listing
                        out.append(_parse_ref(path.read_bytes(), model_dir.name, path.name))
        except OSError as exc:
            raise StoreUnavailable(f"adapter store {self.root}: {exc.strerror or exc}") from exc
        return out

    def read_blob(self, sha256: str) -> bytes:
        path = self.root / "blobs" / f"{sha256}.safetensors"
        try:
            if path.stat().st_size > MAX_ADAPTER_BYTES:
                raise ValueError(f"blob {sha256[:12]} is larger than {MAX_ADAPTER_BYTES} bytes")
            return path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StoreUnavailable(f"adapter store {self.root}: {exc.strerror or exc}") from exc

    def put(self, model: str, name: str, data: bytes) -> Ref:
        ref = Ref(model, name, sha256_of(data), time.time())
        self._mounted()
        try:
            # always written (as FsspecStore does): a blob already there may be a corrupt copy, which a
            # put of the right bytes must repair; the write is atomic, so readers see old or new whole
            _atomic_write(self.root / "blobs" / f"{ref.sha256}.safetensors", data)
            _atomic_write(self.root / _ref_key(model, name), _ref_bytes(ref))
        except OSError as exc:
            raise StoreUnavailable(f"adapter store {self.root}: cannot write ({exc.strerror or exc})") from exc
        return ref

    def delete(self, model: str, name: str) -> bool:
        self._mounted()
        try:
            (self.root / _ref_key(model, name)).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreUnavailable(f"adapter store {self.root}: cannot delete ({exc.strerror or exc})") from exc
        return True


def _atomic_write(path: Path, data: bytes) -> None:
    """``data`` at ``path`` or nothing: a temp file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself durable (not every filesystem allows this)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class FsspecStore:
    """A store in an object store (s3://, gs://, az://, ...) through fsspec; each PUT is atomic there."""

    def __init__(self, url: str, **options: Any) -> None:
        try:
            from fsspec.core import url_to_fs
        except ImportError as exc:
            raise ValueError("an object-store adapter store needs fsspec and its driver: "
                             "pip install 'radapt-serve[store]'") from exc
        self.url = url.rstrip("/")
        # a fresh instance: fsspec's instance cache would pin credentials and endpoints across reconfigurations
        self.fs, self.base = url_to_fs(self.url, skip_instance_cache=True, **options)
        self.base = self.base.rstrip("/")

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except FileNotFoundError:
            raise
        except Exception as exc:  # drivers raise their own types (botocore, aiohttp, ...)
            raise StoreUnavailable(f"adapter store {self.url}: cannot {what} ({exc})") from exc

    def refs(self) -> list[Ref]:
        self.fs.invalidate_cache()
        root = self.base.split("/", 1)[0]  # the bucket: gone or forbidden must not read as "no adapters"
        if not self._call("list", self.fs.exists, root):
            raise StoreUnavailable(f"adapter store {self.url}: {root} does not exist or cannot be read")
        try:
            paths = self._call("list", self.fs.find, f"{self.base}/refs")
        except FileNotFoundError:
            paths = []
        out = []
        for path in sorted(p for p in paths if p.endswith(".json")):
            parts = path.rsplit("/", 2)
            with contextlib.suppress(FileNotFoundError):
                out.append(_parse_ref(self._call("read", self.fs.cat_file, path), parts[-2], parts[-1]))
        return out

    def read_blob(self, sha256: str) -> bytes:
        data = self._call("read", self.fs.cat_file, f"{self.base}/blobs/{sha256}.safetensors")
        if len(data) > MAX_ADAPTER_BYTES:
            raise ValueError(f"blob {sha256[:12]} is larger than {MAX_ADAPTER_BYTES} bytes")
        return data

    def put(self, model: str, name: str, data: bytes) -> Ref:
        ref = Ref(model, name, sha256_of(data), time.time())
        self._call("write", self.fs.pipe_file, f"{self.base}/blobs/{ref.sha256}.safetensors", data)
        self._call("write", self.fs.pipe_file, f"{self.base}/{_ref_key(model, name)}", _ref_bytes(ref))
        return ref

    def delete(self, model: str, name: str) -> bool:
        key = f"{self.base}/{_ref_key(model, name)}"
        self.fs.invalidate_cache()
        if not self._call("list", self.fs.exists, key):  # object stores delete a missing key without error
            return False
        with contextlib.suppress(FileNotFoundError):
            self._call("delete", self.fs.rm_file, key)
        return True


def open_store(url: str) -> Backend:
    """``url``: a directory path (or file://) or an fsspec URL such as s3://bucket/prefix."""
    if "://" not in url or url.startswith("file://"):
        return DirStore(Path(url.removeprefix("file://")))
    return FsspecStore(url)
