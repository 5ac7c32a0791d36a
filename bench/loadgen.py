"""A closed-loop HTTP load generator: N concurrent clients, each sending its next request as soon
as the previous one is answered, for a fixed request count or a fixed duration.

Request bodies are encoded once before the clock starts, so the generator spends its CPU on
HTTP alone (client and server share this machine's cores).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np


@dataclass(frozen=True)
class Request:
    """One prepared request: POST ``path`` with a JSON ``body`` already encoded."""

    path: str
    body: bytes
    tag: str = ""  # what the scenario sent (e.g. "robust", "standard"), kept in the record

    @classmethod
    def json(cls, path: str, payload: dict[str, Any], tag: str = "") -> Request:
        return cls(path, json.dumps(payload).encode(), tag)


@dataclass(frozen=True)
class Record:
    start: float  # perf_counter seconds
    end: float
    ok: bool
    tag: str
    note: str  # the check's note (e.g. the adapter a response named) or the error


# (request, response) -> (ok, note): the scenario decides what a correct answer is
Check = Callable[[Request, httpx.Response], tuple[bool, str]]


def status_ok(_: Request, response: httpx.Response) -> tuple[bool, str]:
    return response.status_code == 200, "" if response.status_code == 200 else f"HTTP {response.status_code}"


@dataclass
class LoadResult:
    concurrency: int
    records: list[Record] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU accounting the caller adds

    @property
    def ok(self) -> list[Record]:
        return [r for r in self.records if r.ok]

    @property
    def errors(self) -> list[Record]:
        return [r for r in self.records if not r.ok]

    def summary(self) -> dict[str, Any]:
        """Throughput over the whole window and latency percentiles of the answered requests."""
        wall = max(self.finished - self.started, 1e-9)
        lat_ms = np.array([(r.end - r.start) * 1e3 for r in self.ok]) if self.ok else np.array([np.nan])
        notes = sorted({r.note for r in self.errors})[:5]
        return {
            "concurrency": self.concurrency,
            "requests": len(self.records),
            "errors": len(self.errors),
            "error_samples": notes,
            "wall_s": round(wall, 3),
            "throughput_rps": round(len(self.ok) / wall, 3),
            "p50_ms": round(float(np.percentile(lat_ms, 50)), 2),
            "p95_ms": round(float(np.percentile(lat_ms, 95)), 2),
            "p99_ms": round(float(np.percentile(lat_ms, 99)), 2),
            "mean_ms": round(float(np.mean(lat_ms)), 2),
        }


async def run_load(base_url: str, requests: Sequence[Request], concurrency: int, *,
                   total: int | None = None, duration_s: float | None = None,
                   check: Check = status_ok, timeout_s: float = 120.0,
                   client: httpx.AsyncClient | None = None) -> LoadResult:
    """Drive ``base_url`` with ``concurrency`` clients cycling through ``requests``.

    Stops after ``total`` requests or once ``duration_s`` has passed (requests already sent are
    awaited), whichever comes first. A transport error or a failed check counts as an error.
    """
    if not requests or concurrency < 1:
        raise ValueError("run_load needs at least one request and concurrency >= 1")
    if total is None and duration_s is None:
        raise ValueError("run_load needs total or duration_s")
    result = LoadResult(concurrency)
    counter = itertools.count()
    own = client is None
    http = client or httpx.AsyncClient(
        base_url=base_url, timeout=timeout_s,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))
    headers = {"content-type": "application/json"}

    async def one_client() -> None:
        while True:
            i = next(counter)
            if total is not None and i >= total:
                return
            if duration_s is not None and time.perf_counter() - result.started >= duration_s:
                return
            req = requests[i % len(requests)]
            t0 = time.perf_counter()
            try:
                response = await http.post(req.path, content=req.body, headers=headers)
                ok, note = check(req, response)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                ok, note = False, f"{exc.__class__.__name__}: {exc}"[:200]
            result.records.append(Record(t0, time.perf_counter(), ok, req.tag, note))

    try:
        result.started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        result.finished = time.perf_counter()
    finally:
        if own:
            await http.aclose()
    return result
