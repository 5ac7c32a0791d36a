"""Continuous batching for generation: one scheduler and one model thread per chat model.

    scheduler.submit(request)     # event loop; Overloaded (429) when the waiting line is full
    generation = await request.future

Every step the model thread (1) drops rows whose client went away or whose deadline passed,
(2) admits waiting requests first come, first served, while the running set stays within
``max_running`` rows and ``kv_budget`` reserved tokens (prompt + max_tokens per row, so a running row
never has to be evicted), prefilling each one alone with its own adapter, (3) decodes one token for
every running row in one forward, and (4) retires each row the moment it ends (end of turn, its own
max_tokens, a stop string), freeing its cache. Sampling is per row (``RowSampler``).

Failures stay with their row: a prefill that raises fails its request; a decode forward that raises
is retried row by row to find the row that fails, and the others go on; non-finite scores fail that
row. Results and streamed text reach the event loop in one ``call_soon_threadsafe`` per step.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from adapters import Adapter
from service.engine.sampling import NonFiniteScores, RowSampler, SamplingParams
from service.errors import InferenceFailed, NotReady, Overloaded, RequestTimeout, ServiceError
from service.metrics import Metrics
from service.runners.base import GenerationRunner, PreparedPrompt, adapter_for
from service.runners.detok import RowText
from service.runners.kvbatch import DecodeBatch, PrefilledRow, merge

log = logging.getLogger(__name__)


class Message(str, enum.Enum):
    """What the model thread posts to the event loop about a request (its outbox)."""

    DELTA = "delta"  # streamed text
    DONE = "done"  # the Generation
    ERROR = "error"  # the request's error


class TokenStream:
    """Text deltas from the model thread to one request's coroutine (None ends the stream)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length
    adapter_id: str | None  # uid of the adapter object that ran (None = standard mode)
    queue_time: float  # enqueued -> prefill started
    inference_time: float  # prefill started -> finished


@dataclass(eq=False)
class GenerationRequest:
    """One generation, created on the event loop. ``cancelled`` is the only field the loop writes later."""

    prompt: PreparedPrompt  # what the runner's ``prepare`` returned
    params: SamplingParams
    adapter: str | None
    deadline: float  # time.monotonic() by which it must be done
    stream: TokenStream | None = None
    loop: asyncio.AbstractEventLoop = field(default=None)  # type: ignore[assignment]  # set by submit
    future: asyncio.Future = field(default=None)  # type: ignore[assignment]
    enqueued: float = 0.0
    cancelled: bool = False

    @property
    def reserve(self) -> int:
        """Tokens of KV cache this request may need at most."""
        return int(self.prompt.length) + self.params.max_tokens

    def cancel(self) -> None:
        """The client went away: the row is dropped at the next step (or never admitted)."""
        self.cancelled = True
        if self.future is not None and not self.future.done():
            self.future.cancel()


class _Row:
    """A running request's decoding state (model thread only)."""

    def __init__(self, req: GenerationRequest, text: RowText, adapter_id: str | None, started: float) -> None:
        self.req, self.text, self.adapter_id, self.started = req, text, adapter_id, started
        self.sampler = RowSampler(req.params)
        self.count = 0  # tokens generated (the end-of-turn token included)
        self.next_token = -1  # chosen, not yet fed to the model
        self.finish: str | None = None


@dataclass(frozen=True)
class SchedulerLimits:
    max_running: int  # rows decoding at once
    kv_budget: int  # tokens reserved by running rows (prompt + max_tokens each)
    max_waiting: int  # requests waiting for admission beyond which submit answers 429


class GenerationScheduler:
    def __init__(self, model: str, runner: GenerationRunner, snapshot: Callable[[], Mapping[str, Adapter]],
                 metrics: Metrics, limits: SchedulerLimits) -> None:
        self.model, self.runner, self._snapshot, self.limits = model, runner, snapshot, limits
        self._waiting: deque[GenerationRequest] = deque()
        self._cond = threading.Condition()
        self._rows: list[_Row] = []
        self._batch: DecodeBatch | None = None
        self._reserved = 0
        self._stopping = False
        self._abort: ServiceError | None = None
        self._thread: threading.Thread | None = None
        self.busy_since: float | None = None
        self.steps = 0  # decode steps run (tests and diagnostics)
        self._outbox: list[tuple[GenerationRequest, Message, Any]] = []
        m = metrics
        self._depth = m.queue_depth.labels(model=model)
        self._running = m.running_sequences.labels(model=model)
        self._queue_hist = m.queue_duration.labels(model=model)
        self._step_hist = m.inference_duration.labels(model=model)
        self._rows_hist = m.batch_size.labels(model=model)
        self._tokens = m.generated_tokens.labels(model=model)
        self._ttft = m.time_to_first_token.labels(model=model)

    # lifecycle (event loop)
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"generate-{self.model}", daemon=True)
            self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def abort_all(self, error: ServiceError) -> None:
        """Fail every waiting and running request with ``error`` at the next step (end of a drain)."""
        with self._cond:
            self._abort = error
            self._cond.notify()

    async def stop(self) -> None:
        self.abort_all(NotReady("server is shutting down"))
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def wedged(self, after: float) -> bool:
        if not self.alive:
            return True
        return self.busy_since is not None and time.monotonic() - self.busy_since > after

    @property
    def depth(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._rows)

    # admission (event loop)
    def submit(self, req: GenerationRequest) -> None:
        if not self.alive:
            raise NotReady(f"model {self.model} is not serving")
        req.loop = asyncio.get_running_loop()
        req.future = req.loop.create_future()
        req.enqueued = time.monotonic()
        with self._cond:
            if len(self._waiting) >= self.limits.max_waiting:
                self._waiting = deque(r for r in self._waiting if not r.cancelled)
                if len(self._waiting) >= self.limits.max_waiting:
                    raise Overloaded(f"model {self.model} has {len(self._waiting)} generations waiting; retry later",
                                     headers={"Retry-After": "1"})
            self._waiting.append(req)
            self._depth.set(len(self._waiting))
            self._cond.notify()

    # the model thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._rows or self._abort or self._stopping):
                    self._cond.wait()
                if self._stopping and not self._rows and not self._waiting:
                    return
            try:
                self._step()
            except Exception:  # never reached on purpose: every failure belongs to a row
                log.exception("generation step on %s failed; failing its rows", self.model)
                for row in self._rows:
                    self._fail(row.req, InferenceFailed("generation failed"))
                self._rows, self._batch, self._reserved = [], None, 0
            finally:
                self.busy_since = None
                self._post()

    def _step(self) -> None:
        self.busy_since = time.monotonic()
        if self._abort is not None:
            self._abort_everything()
            return
        self._drop_gone()
        self._admit()
        if self._rows:
            self._decode()
        self._running.set(len(self._rows))

    def _abort_everything(self) -> None:
        with self._cond:
            error, self._abort = self._abort, None
            waiting, self._waiting = list(self._waiting), deque()
        for req in waiting:
            self._fail(req, error)
        for row in self._rows:
            self._fail(row.req, error)
        self._rows, self._batch, self._reserved = [], None, 0

    def _drop_gone(self) -> None:
        now = time.monotonic()
        keep = []
        for i, row in enumerate(self._rows):
            if row.req.cancelled:
                continue
            if now > row.req.deadline:
                self._fail(row.req, RequestTimeout("generation did not finish within the request deadline"))
                continue
            keep.append(i)
        self._keep(keep)

    def _admit(self) -> None:
        now = time.monotonic()
        admitted: list[GenerationRequest] = []
        with self._cond:
            reserved = self._reserved
            while self._waiting and len(self._rows) + len(admitted) < self.limits.max_running:
                head = self._waiting[0]
                if not head.cancelled and now <= head.deadline and reserved + head.reserve > self.limits.kv_budget \
                        and (self._rows or admitted):
                    break  # first come, first served: wait for room rather than skip ahead
                self._waiting.popleft()
                admitted.append(head)
                reserved += head.reserve
            self._depth.set(len(self._waiting))
        if not admitted:
            return
        adapters = self._snapshot()
        joining = []
        for req in admitted:
            if req.cancelled:
                continue
            if now > req.deadline:
                self._fail(req, RequestTimeout("request expired while waiting for a generation slot"))
                continue
            row = self._prefill(req, adapters)
            if row is not None:
                joining.append(row)
        if joining:
            prefilled = [r[1] for r in joining]
            if self._batch is None:
                self._batch = DecodeBatch(prefilled[0], self.runner.device)
                self._batch.extend(prefilled[1:])
            else:
                self._batch.extend(prefilled)
            for row, _ in joining:
                self._rows.append(row)
                self._reserved += row.req.reserve

    def _prefill(self, req: GenerationRequest, adapters: Mapping[str, Adapter]) -> tuple[_Row, PrefilledRow] | None:
        started = time.monotonic()
        self._queue_hist.observe(started - req.enqueued)
        try:
            adapter = adapter_for(req.adapter, adapters)  # NotFound when it was removed since admission
            row = _Row(req, self.runner.text_of(req.params.stop), None if adapter is None else adapter.uid, started)
            scores, prefilled = self.runner.prefill(req.prompt, adapter)
            self._ttft.observe(time.monotonic() - started)
            self._take(row, row.sampler.choose(scores))
        except Exception as exc:  # this request's failure only
            self._fail(req, _as_service_error(exc, self.model))
            return None
        if row.finish is not None:
            self._complete(row)
            return None
        return row, prefilled

    def _decode(self) -> None:
        assert self._batch is not None
        start = time.monotonic()
        tokens = [row.next_token for row in self._rows]
        try:
            scores = self.runner.decode(self._batch, tokens)
        except Exception as exc:
            log.warning("decode step of %d rows on %s failed (%s: %s); isolating the row", len(self._rows),
                        self.model, type(exc).__name__, exc)
            scores = self._decode_one_by_one(tokens)
            if scores is None:
                return
        self.steps += 1
        self._step_hist.observe(time.monotonic() - start)
        self._rows_hist.observe(len(self._rows))
        plain = [i for i, row in enumerate(self._rows) if row.sampler.plain_greedy]
        greedy: dict[int, int | Exception] = {}
        if plain:
            picked = scores[plain]
            finite = torch.isfinite(picked).all(dim=-1).tolist()
            for i, token, ok in zip(plain, picked.argmax(dim=-1).tolist(), finite, strict=True):
                greedy[i] = token if ok else NonFiniteScores("the model produced non-finite scores for this request")
        keep = []
        for i, row in enumerate(self._rows):
            try:
                token = greedy[i] if i in greedy else row.sampler.choose(scores[i])
                if isinstance(token, Exception):
                    raise token
                self._take(row, token)
            except Exception as exc:
                self._fail(row.req, _as_service_error(exc, self.model))
                continue
            if row.finish is None and not row.req.cancelled:
                keep.append(i)
            elif row.finish is not None:
                self._complete(row)
        self._keep(keep)

    def _decode_one_by_one(self, tokens: list[int]) -> torch.Tensor | None:
        """After a failed batched step: each row alone, so only the rows that fail are failed."""
        assert self._batch is not None
        survivors, parts, scores = [], [], []
        for i, row in enumerate(self._rows):
            one = self._batch.split(i)
            try:
                scores.append(self.runner.decode(one, [tokens[i]])[0])
            except Exception as exc:
                self._fail(row.req, _as_service_error(exc, self.model))
                continue
            survivors.append(row)
            parts.append(one)
        self._rows = survivors
        self._reserved = sum(r.req.reserve for r in survivors)
        self._batch = merge(parts) if parts else None
        return torch.stack(scores) if scores else None

    def _take(self, row: _Row, token: int) -> None:
        """Record ``token`` for ``row``; decide whether the row ends here."""
        row.count += 1
        self._tokens.inc()
        row.sampler.record(token)
        if token in self.runner.eos and not row.req.params.ignore_eos:
            row.finish = "stop"
            return
        delta = row.text.add(token)
        if delta and row.req.stream is not None:
            self._outbox.append((row.req, Message.DELTA, delta))
        if row.text.stopped:
            row.finish = "stop"
        elif row.count >= row.req.params.max_tokens:
            row.finish = "length"
        row.next_token = token

    def _keep(self, keep: list[int]) -> None:
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[i] for i in keep]
        self._reserved = sum(r.req.reserve for r in self._rows)
        if not self._rows:
            self._batch = None
        elif self._batch is not None:
            self._batch.keep(keep)

    # results
    def _complete(self, row: _Row) -> None:
        text, rest = row.text.final()
        if rest and row.req.stream is not None:
            self._outbox.append((row.req, Message.DELTA, rest))
        now = time.monotonic()
        gen = Generation(text, int(row.req.prompt.length), row.count, row.finish or "length", row.adapter_id,
                         row.started - row.req.enqueued, now - row.started)
        self._outbox.append((row.req, Message.DONE, gen))

    def _fail(self, req: GenerationRequest, error: BaseException) -> None:
        self._outbox.append((req, Message.ERROR, error))

    def _post(self) -> None:
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, []
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for entry in outbox:
            by_loop.setdefault(entry[0].loop, []).append(entry)
        for loop, entries in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, entries)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass


def _deliver(entries: list[tuple[GenerationRequest, Message, Any]]) -> None:
    """On the event loop: stream deltas, then resolve futures (a stream ends with None)."""
    for req, kind, value in entries:
        if kind == Message.DELTA:
            req.stream.queue.put_nowait(value)  # type: ignore[union-attr]
            continue
        if req.stream is not None:
            req.stream.queue.put_nowait(None)
        if req.future.done():
            continue
        if kind == Message.DONE:
            req.future.set_result(value)
        else:
            req.future.set_exception(value)


def _as_service_error(exc: BaseException, model: str) -> ServiceError:
    if isinstance(exc, ServiceError):
        return exc
    log.error("generation row on %s failed: %s: %s", model, type(exc).__name__, exc)
    if isinstance(exc, NonFiniteScores):
        return InferenceFailed(f"{exc}; try a different temperature or top_p", "non_finite_scores")
    return InferenceFailed("generation failed for this request")
