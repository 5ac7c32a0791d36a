"""The batcher with a fake runner: batching, admission (429), deadlines (504), failures, skipping."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.engine.batcher import Batcher
from service.errors import InferenceFailed, NotFound, Overloaded, RequestTimeout
from service.metrics import Metrics
from service.runners.base import Output, WorkItem

pytestmark = [pytest.mark.unit, pytest.mark.asyncio]


class FakeRunner:
    """Doubles payloads; records batches; can block, fail a batch or fail one item."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def run_batch(self, items, snapshot):
        self.started.set()
        self.gate.wait(5)
        payloads = [i.payload for i in items]
        self.batches.append(payloads)
        if "boom" in payloads:
            raise RuntimeError("secret internals")
        return [NotFound("item says no") if p == "bad" else Output(p * 2, snapshot.get(i.adapter)) for p, i in
                zip(payloads, items, strict=True)]


def make(runner: FakeRunner, **kw) -> Batcher:
    kw = {"max_batch": 4, "max_wait": 0.01, "max_queue": 16, "timeout": 5.0} | kw
    return Batcher("m", runner.run_batch, lambda: {"a": "A"}, Metrics(), **kw)


async def test_batches_fill_up_to_max_and_results_go_to_their_items():
    runner = FakeRunner()
    b = make(runner)
    b.start()
    items = [b.submit(WorkItem("x", i, "a" if i % 2 else None)) for i in range(10)]
    done = await asyncio.gather(*(b.wait(i) for i in items))
    assert [(d.value, d.adapter_id) for d in done] == [(i * 2, "A" if i % 2 else None) for i in range(10)]
    assert all(len(batch) <= 4 for batch in runner.batches) and len(runner.batches) == 3
    assert all(d.queue_time >= 0 and d.inference_time >= 0 for d in done)
    await b.stop()


async def test_full_queue_answers_429_with_retry_after():
    runner = FakeRunner()
    runner.gate.clear()
    b = make(runner, max_queue=2, max_batch=1)
    b.start()
    first = b.submit(WorkItem("x", 1))
    await asyncio.to_thread(runner.started.wait, 5)  # item 1 is in the forward, the queue is empty
    queued = [b.submit(WorkItem("x", 2)), b.submit(WorkItem("x", 3))]
    with pytest.raises(Overloaded) as err:
        b.submit(WorkItem("x", 4))
    assert err.value.status == 429 and int(err.value.headers["Retry-After"]) >= 1
    runner.gate.set()
    assert [(await b.wait(i)).value for i in [first, *queued]] == [2, 4, 6]
    await b.stop()


async def test_deadline_gives_504_and_expired_items_never_run():
    runner = FakeRunner()
    runner.gate.clear()
    b = make(runner, max_batch=1, timeout=0.2)
    b.start()
    blocking = b.submit(WorkItem("x", 1))
    await asyncio.to_thread(runner.started.wait, 5)
    late = b.submit(WorkItem("x", 2))
    with pytest.raises(RequestTimeout) as err:
        await b.wait(late)
    assert err.value.status == 504
    runner.gate.set()
    with pytest.raises(RequestTimeout):
        await b.wait(blocking)  # it also ran past its deadline
    after = b.submit(WorkItem("x", 3, deadline=time.monotonic() + 5.0))
    assert (await b.wait(after)).value == 6
    assert [2] not in runner.batches  # the timed-out item was skipped, not computed
    await b.stop()


async def test_cancelled_items_are_skipped():
    runner = FakeRunner()
    runner.gate.clear()
    b = make(runner, max_batch=8)
    b.start()
    blocking = b.submit(WorkItem("x", 0))
    await asyncio.to_thread(runner.started.wait, 5)
    gone = b.submit(WorkItem("x", 99))
    waiter = asyncio.ensure_future(b.wait(gone))
    await asyncio.sleep(0)
    waiter.cancel()  # the client went away
    kept = b.submit(WorkItem("x", 5))
    runner.gate.set()
    assert (await b.wait(kept)).value == 10 and (await b.wait(blocking)).value == 0
    assert all(99 not in batch for batch in runner.batches)
    await b.stop()


async def test_a_failing_batch_is_rerun_item_by_item_so_only_the_failing_item_fails():
    runner = FakeRunner()
    runner.gate.clear()
    b = make(runner, max_batch=2, max_wait=0.0)
    b.start()
    blocking = b.submit(WorkItem("x", 0))
    await asyncio.to_thread(runner.started.wait, 5)
    doomed = [b.submit(WorkItem("x", "boom")), b.submit(WorkItem("x", 1))]
    fine = [b.submit(WorkItem("x", 2)), b.submit(WorkItem("x", "bad"))]
    runner.gate.set()
    await b.wait(blocking)
    with pytest.raises(InferenceFailed) as err:
        await b.wait(doomed[0])
    assert "secret" not in err.value.message
    assert (await b.wait(doomed[1])).value == 2  # batched with the failing item, yet it succeeds
    assert [0] in runner.batches and ["boom", 1] in runner.batches and ["boom"] in runner.batches
    assert (await b.wait(fine[0])).value == 4
    with pytest.raises(NotFound):
        await b.wait(fine[1])  # a per-item error stays with its item
    assert b.alive and (await b.wait(b.submit(WorkItem("x", 7)))).value == 14
    await b.stop()


async def test_settings_are_validated_and_stop_fails_pending():
    with pytest.raises(ValueError, match="max_batch"):
        make(FakeRunner(), max_batch=0)
    runner = FakeRunner()
    runner.gate.clear()
    b = make(runner, max_batch=1)
    b.start()
    b.submit(WorkItem("x", 1))
    await asyncio.to_thread(runner.started.wait, 5)
    pending = b.submit(WorkItem("x", 2))
    runner.gate.set()
    await b.stop()
    assert pending.future.done()
    assert not b.alive and b.wedged(1.0)
