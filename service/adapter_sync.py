"""Keeps this replica's runtime adapters equal to the shared adapter store (``--adapter-store``).

At start and every ``adapter_sync_s`` the store's refs are listed and every ref whose blob this
replica does not serve yet is read, its sha256 verified, parsed and checked (``adapters.method.io``, the
adapter manager's checks: never unpickled) in a worker thread, then put in place on the event loop.
A ref that disappeared removes the adapter it had loaded. A blob that is corrupt, mismatched or does
not fit the model is refused: listed, logged, counted, never served; the other adapters (and the last
good version under that name, if any) are not touched. The store unreachable: nothing changes, the
state is reported (/health/ready, /v1/adapters, ``radapt_adapter_store_up``).

Admin writes go through ``publish`` / ``unpublish``: the store first (so every replica converges),
then this replica at once. A scan that overlapped an admin write is dropped (the next one is current).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

from adapters import Adapter
from adapters.method.io import adapter_to_bytes
from service.adapters_manager import DEFAULT, parse_bytes
from service.engine.models import ServedModel
from service.errors import NotReady, ServiceError
from service.metrics import Metrics
from service.store_backends import Backend, Ref, sha256_of

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (model, adapter name)


class AdapterSync:
    def __init__(self, backend: Backend, models: dict[str, ServedModel], interval_s: float, metrics: Metrics,
                 allow_weight_mismatch: bool = False) -> None:
        self.backend, self.models, self.interval_s = backend, models, interval_s
        self.allow_weight_mismatch = allow_weight_mismatch
        self._metrics = metrics
        self.synced: dict[Key, str] = {}  # what this replica loaded from (or wrote to) the store: sha256
        self.refused: dict[Key, tuple[str, str]] = {}  # (sha256, reason)
        self.version = ""
        self.synced_at: float | None = None
        self.error: str | None = None
        self.first_done = False
        self._gen = 0  # bumped around every admin write; a scan that saw another value is stale

    # the loop
    async def run(self) -> None:
        """Sync now, then every ``interval_s`` until cancelled; never raises otherwise."""
        while True:
            await self.sync_once()
            await asyncio.sleep(self.interval_s)

    async def sync_once(self) -> None:
        gen = self._gen
        try:
            refs = await asyncio.to_thread(self.backend.refs)
            wanted = {(r.model, r.name): r for r in refs if r.model in self.models}
            todo = [r for key, r in wanted.items() if self.synced.get(key) != r.sha256]
            fetched = await asyncio.to_thread(self._fetch, todo)
        except Exception as exc:  # unreachable (StoreUnavailable) or a driver's own error: keep serving
            self._down(str(exc))
            return
        if gen != self._gen:
            return  # an admin write happened meanwhile; the next round sees it
        for ref, adapter, reason in fetched:
            self._apply(ref, adapter, reason)
        for key in [k for k in self.synced if k not in wanted]:
            self._drop(key)
        for key in [k for k in self.refused if k not in wanted]:
            del self.refused[key]
        self.version = _version(refs)
        self.synced_at, self.error, self.first_done = time.time(), None, True
        self._metrics.adapter_store_up.set(1)
        self._metrics.adapter_store_syncs.labels(result="ok").inc()
        self._metrics.adapter_store_refused.set(len(self.refused))

    def _fetch(self, refs: list[Ref]) -> list[tuple[Ref, Adapter | None, str]]:
        """Worker thread: each ref's blob read, verified and parsed, or the reason it is refused."""
        out: list[tuple[Ref, Adapter | None, str]] = []
        for ref in refs:
            if not ref.sha256:
                out.append((ref, None, "the ref file is not valid JSON with a sha256"))
                continue
            try:
                data = self.backend.read_blob(ref.sha256)
            except FileNotFoundError:
                out.append((ref, None, f"blob {ref.sha256[:12]} is missing"))
                continue
            except ValueError as exc:
                out.append((ref, None, str(exc)))
                continue
            if sha256_of(data) != ref.sha256:
                out.append((ref, None, f"blob {ref.sha256[:12]} does not match its sha256 (corrupt or truncated)"))
                continue
            try:
                out.append((ref, parse_bytes(data, f"store {ref.name!r}"), ""))
            except ServiceError as exc:
                out.append((ref, None, exc.message))
        return out

    def _apply(self, ref: Ref, adapter: Adapter | None, reason: str) -> None:
        key = (ref.model, ref.name)
        served = self.models[ref.model]
        if adapter is not None:
            try:
                op = served.adapters.put(ref.name, adapter, self.allow_weight_mismatch, digest=ref.sha256)
            except ServiceError as exc:
                reason = exc.message
            else:
                self.synced[key] = ref.sha256
                self.refused.pop(key, None)
                log.info("adapter store: %s %s/%s (%s)", op, ref.model, ref.name, ref.sha256[:12])
                return
        if self.refused.get(key) != (ref.sha256, reason):
            log.warning("adapter store: refused %s/%s (%s): %s", ref.model, ref.name, ref.sha256[:12] or "-", reason)
        self.refused[key] = (ref.sha256, reason)

    def _drop(self, key: Key) -> None:
        """The store no longer has ``key``: unload it here (the default adapter stays, as the API's delete)."""
        del self.synced[key]
        served = self.models.get(key[0])
        if served is not None and key[1] != DEFAULT and key[1] in served.adapters.snapshot():
            served.adapters.remove(key[1])
            log.info("adapter store: removed %s/%s", *key)

    def _down(self, error: str) -> None:
        if self.error != error:
            log.warning("adapter store unreachable, serving what is loaded: %s", error)
        self.error, self.first_done = error, True
        self._metrics.adapter_store_up.set(0)
        self._metrics.adapter_store_syncs.labels(result="error").inc()

    # admin writes
    async def publish(self, served: ServedModel, name: str, adapter: Adapter, allow_weight_mismatch: bool) -> str:
        """Check, write to the store, then load here; returns load | swap. 503 when the store is down."""
        served.adapters.check(name, adapter, allow_weight_mismatch)  # a misfit is never written
        data = await asyncio.to_thread(adapter_to_bytes, adapter)
        self._gen += 1
        try:
            ref = await asyncio.to_thread(self.backend.put, served.name, name, data)
        except Exception as exc:
            raise NotReady(f"adapter store unavailable; nothing was changed: {exc}",
                           "adapter_store_unavailable") from None
        finally:
            self._gen += 1
        op = served.adapters.put(name, adapter, allow_weight_mismatch, digest=ref.sha256)
        self.synced[(served.name, name)] = ref.sha256
        self.refused.pop((served.name, name), None)
        return op

    async def unpublish(self, served: ServedModel, name: str) -> None:
        """Delete from the store, then here (404 when neither has it, 409 for the default adapter)."""
        key = (served.name, name)
        if key not in self.refused:
            served.adapters.check_removable(name)
        self._gen += 1
        try:
            await asyncio.to_thread(self.backend.delete, served.name, name)
        except Exception as exc:
            raise NotReady(f"adapter store unavailable; nothing was deleted: {exc}",
                           "adapter_store_unavailable") from None
        finally:
            self._gen += 1
        self.synced.pop(key, None)
        self.refused.pop(key, None)
        if name in served.adapters.snapshot():
            served.adapters.remove(name)
        self._metrics.adapter_store_refused.set(len(self.refused))

    def status(self) -> dict[str, Any]:
        """What /v1/adapters and /health/ready report about the store."""
        return {"url": self.backend.url, "reachable": self.first_done and self.error is None,
                "version": self.version, "synced_at": self.synced_at, "interval_s": self.interval_s,
                "error": self.error,
                "refused": [{"model": m, "name": n, "digest": sha, "reason": reason}
                            for (m, n), (sha, reason) in sorted(self.refused.items())]}


def _version(refs: list[Ref]) -> str:
    """The store's content as one short digest: equal on two replicas = they read the same store."""
    text = "\n".join(sorted(f"{r.model}\0{r.name}\0{r.sha256}" for r in refs))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
