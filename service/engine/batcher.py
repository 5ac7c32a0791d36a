"""The dynamic batcher: one asyncio task per model that owns its queue.

    item = WorkItem(WorkKind.IMAGE, payload=..., adapter="default", deadline=...)
    batcher.submit(item)             # raises Overloaded (429) when the queue is full
    done = await batcher.wait(item)  # Done(value, adapter_id, queue_time, inference_time) or the item's error

The loop takes the first waiting item, then whatever else is queued, then waits at most
``max_wait`` for the batch to fill to ``max_batch``. Items whose future is already done (client
gone, timed out) are skipped; items past their deadline get 504 without running. The forward runs
in the model's own thread; if a whole batch raises, its items run again one by one so that only
the item that fails gets the error, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from adapters import Adapter
from service.errors import InferenceFailed, NotReady, Overloaded, RequestTimeout, ServiceError
from service.metrics import Metrics
from service.runners.base import Output, WorkItem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Done:
    value: Any
    adapter_id: str | None  # the adapter object that ran (None = standard mode)
    queue_time: float
    inference_time: float


# (items, adapter snapshot) -> one Output or Exception per item; runs in the model thread
BatchFn = Callable[[list[WorkItem], Mapping[str, Adapter]], list[Output | Exception]]


class Batcher:
    def __init__(self, model: str, run_batch: BatchFn, snapshot: Callable[[], Mapping[str, Adapter]],
                 metrics: Metrics, max_batch: int = 32, max_wait: float = 0.002, max_queue: int = 1024,
                 timeout: float = 30.0) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait < 0 or timeout <= 0:
            raise ValueError("max_wait must be >= 0 and timeout > 0")
        self.model = model
        self._run_batch = run_batch
        self._snapshot = snapshot
        self._metrics = metrics
        self.max_batch, self.max_wait, self.timeout = max_batch, max_wait, timeout
        self.max_queue = max_queue
        # the loop owns the queue; a deque (not asyncio.Queue) so admission can drop dead items
        self._items: deque[WorkItem] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"forward-{model}")
        self._task: asyncio.Task | None = None
        self.busy_since: float | None = None  # loop time when the running forward started
        self._running: list[WorkItem] = []  # the batch in the forward now
        self._depth = metrics.queue_depth.labels(model=model)
        self._queue_hist = metrics.queue_duration.labels(model=model)
        self._infer_hist = metrics.inference_duration.labels(model=model)
        self._batch_hist = metrics.batch_size.labels(model=model)

    # lifecycle
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.model}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._items:
            item = self._items.popleft()
            if not item.future.done():
                item.future.set_exception(NotReady("server is shutting down"))
        self._executor.shutdown(wait=True)

    def abort_all(self, error: ServiceError) -> None:
        """Fail every queued item and the batch in the forward with ``error`` (end of a drain)."""
        for item in [*self._items, *self._running]:
            if not item.future.done():
                item.future.set_exception(error)
        self._items.clear()
        self._depth.set(0)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def wedged(self, after: float) -> bool:
        """True when the loop died or one forward has run longer than ``after`` seconds."""
        if not self.alive:
            return True
        return self.busy_since is not None and time.monotonic() - self.busy_since > after

    @property
    def depth(self) -> int:
        return len(self._items)

    # admission
    def submit(self, item: WorkItem) -> WorkItem:
        """Queue ``item`` (its ``deadline`` already set by the engine; else now + timeout)."""
        if not self.alive:
            raise NotReady(f"model {self.model} is not serving yet")
        loop = asyncio.get_running_loop()
        item.future = loop.create_future()
        item.enqueued = time.monotonic()
        if item.deadline == float("inf"):
            item.deadline = item.enqueued + self.timeout
        if len(self._items) >= self.max_queue:
            self._items = deque(i for i in self._items if not i.future.done())  # timed out / client gone
            if len(self._items) >= self.max_queue:
                retry = max(1, round(self.max_wait + self.timeout / 10))
                raise Overloaded(f"model {self.model} has {self.depth} items queued; retry later",
                                 headers={"Retry-After": str(retry)})
        self._items.append(item)
        self._wakeup.set()
        self._depth.set(len(self._items))
        return item

    async def wait(self, item: WorkItem) -> Done:
        """The item's result; 504 at its deadline (the item is then skipped if still queued)."""
        remaining = item.deadline - time.monotonic()
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), max(remaining, 0.0))
        except asyncio.TimeoutError:
            item.future.cancel()
            raise RequestTimeout("request did not finish within its deadline") from None
        except asyncio.CancelledError:
            item.future.cancel()  # our caller went away: never run it
            raise

    # the loop
    async def _collect(self) -> list[WorkItem]:
        """Up to max_batch live items: what is queued now, then what arrives within max_wait."""
        while not self._items:
            self._wakeup.clear()
            await self._wakeup.wait()
        batch: list[WorkItem] = []
        end = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            if self._items:
                item = self._items.popleft()
                if not item.future.done():  # skip items whose client went away or timed out
                    batch.append(item)
                continue
            left = end - time.monotonic()
            if left <= 0 or not batch:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:
                break
        self._depth.set(len(self._items))
        return batch

    def _live(self, batch: list[WorkItem]) -> list[WorkItem]:
        now = time.monotonic()
        live = []
        for item in batch:
            if item.future.done():  # cancelled: its client went away or it timed out
                continue
            if now > item.deadline:
                item.future.set_exception(RequestTimeout("request expired in the queue"))
                continue
            live.append(item)
        return live

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._live(await self._collect())
            if not batch:
                continue
            try:
                await self._run(loop, batch)
            except asyncio.CancelledError:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(NotReady("server is shutting down"))
                raise
            except Exception:  # the loop must survive anything; _run already failed the items
                log.exception("batcher %s: unexpected error", self.model)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[WorkItem]) -> None:
        start = time.monotonic()
        for item in batch:
            self._queue_hist.observe(start - item.enqueued)
        snapshot = self._snapshot()  # one adapter view for the whole batch
        self.busy_since, self._running = start, batch
        try:
            results = await loop.run_in_executor(self._executor, self._run_isolated, batch, snapshot)
        finally:
            self.busy_since, self._running = None, []
        elapsed = time.monotonic() - start
        self._infer_hist.observe(elapsed)
        self._batch_hist.observe(len(batch))
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(Done(result.value, result.adapter_id, start - item.enqueued, elapsed))

    def _run_isolated(self, batch: list[WorkItem], snapshot: Mapping[str, Adapter]) -> list[Output | Exception]:
        """Model thread: the batch at once; if it raises, each item alone (only failing items fail)."""
        try:
            return self._checked(batch, snapshot)
        except Exception as exc:
            log.error("batch of %d on %s failed (%s: %s)%s", len(batch), self.model, type(exc).__name__, exc,
                      "; running its items one by one" if len(batch) > 1 else "")
            if len(batch) == 1:
                return [_as_error(exc)]
        results: list[Output | Exception] = []
        for item in batch:
            try:
                results += self._checked([item], snapshot)
            except Exception as exc:
                results.append(_as_error(exc))
        return results

    def _checked(self, batch: list[WorkItem], snapshot: Mapping[str, Adapter]) -> list[Output | Exception]:
        results = self._run_batch(batch, snapshot)
        if len(results) != len(batch):
            raise RuntimeError(f"runner returned {len(results)} results for {len(batch)} items")
        return results


def _as_error(exc: Exception) -> Exception:
    return exc if isinstance(exc, ServiceError) else InferenceFailed("inference failed for this item")
