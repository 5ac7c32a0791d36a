"""The measurements of one server run, each a small async function over a ``Ctx``.

Throughput comparisons interleave their modes in rounds (A, B, C, A, B, C, ...) so that drift in
the machine's load (other processes share the cores) falls on every mode alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench import promscrape
from bench.loadgen import LoadResult, Request, run_load
from bench.machine import ForeignLoad, cpu_seconds
from bench.server import ServerProcess

LABELS = ["cat", "dog", "car", "tree", "house", "bird", "boat", "flower", "person", "horse"]


@dataclass
class Ctx:
    srv: ServerProcess
    http: httpx.AsyncClient  # admin and metrics calls
    uris: list[str]  # image data URIs
    point_s: float  # seconds per load point
    rounds: int  # rounds of interleaved modes
    saturation: int  # concurrency used for the comparisons
    pids: Any = None  # () -> pids of the bench and the server, for ForeignLoad
    rss_peak: int = 0
    foreign: list[float] = field(default_factory=list)


def embed(uri: str, robust: bool, adapter: str | None = None, model: str | None = None) -> Request:
    body: dict[str, Any] = {"input": [uri], "modality": "image", "robust": robust}
    if adapter is not None:
        body["adapter"] = adapter
    if model is not None:
        body["model"] = model
    return Request.json("/v1/embeddings", body, f"{'robust' if robust else 'standard'}:{adapter or ''}")


def classify(uri: str) -> Request:
    return Request.json("/v1/classify", {"image": uri, "labels": LABELS, "robust": False}, "classify")


def check_answer(req: Request, response: httpx.Response) -> tuple[bool, str]:
    """200, one result, and the response names the mode (and adapter) the request asked for."""
    if response.status_code != 200:
        return False, f"HTTP {response.status_code}: {response.text[:120]}"
    body = response.json()
    mode, _, adapter = req.tag.partition(":")
    if req.tag == "classify":
        return bool(body.get("results")), ""
    if len(body.get("data", [])) != 1:
        return False, "expected one embedding"
    if body.get("robust") != (mode == "robust"):
        return False, f"asked {mode}, server ran robust={body.get('robust')}"
    if adapter and body.get("adapter") != adapter:
        return False, f"asked adapter {adapter}, server ran {body.get('adapter')}"
    return True, str(body.get("adapter"))


async def load(ctx: Ctx, requests: Sequence[Request], concurrency: int, duration_s: float | None = None
               ) -> tuple[LoadResult, float | None]:
    """One load point; returns the result and the server's mean batch size over it."""
    before = await promscrape.scrape(ctx.http)
    foreign = ForeignLoad(ctx.pids).start()
    server_cpu, client_cpu = cpu_seconds(ctx.srv.pids()), time.process_time()
    sampler = asyncio.create_task(_sample_rss(ctx))
    try:
        result = await run_load(ctx.srv.url, requests, concurrency, duration_s=duration_s or ctx.point_s,
                                check=check_answer)
    finally:
        sampler.cancel()
    n = max(len(result.records), 1)
    result.cpu = {"server_cpu_ms_per_req": round((cpu_seconds(ctx.srv.pids()) - server_cpu) * 1e3 / n, 2),
                  "client_cpu_ms_per_req": round((time.process_time() - client_cpu) * 1e3 / n, 2)}
    ctx.foreign.append(foreign.cores())
    after = await promscrape.scrape(ctx.http)
    # share of the window the model thread spent in forwards: 1.0 = it never waited for a batch
    busy = (promscrape.total(after, "radapt_inference_duration_seconds_sum")
            - promscrape.total(before, "radapt_inference_duration_seconds_sum"))
    result.cpu["forward_busy"] = round(busy / max(result.finished - result.started, 1e-9), 3)
    return result, promscrape.delta_mean(before, after, "radapt_batch_size")


async def _sample_rss(ctx: Ctx) -> None:
    while True:
        ctx.rss_peak = max(ctx.rss_peak, ctx.srv.rss_bytes())
        await asyncio.sleep(0.25)


def _with_batch(result: LoadResult, mean_batch: float | None) -> dict[str, Any]:
    return result.summary() | result.cpu | {"mean_batch": None if mean_batch is None else round(mean_batch, 2)}


async def sweep(ctx: Ctx, concurrencies: Sequence[int]) -> list[dict[str, Any]]:
    """Standard-mode image embeddings at each concurrency."""
    reqs = [embed(u, robust=False) for u in ctx.uris]
    out = []
    for c in concurrencies:
        result, mean_batch = await load(ctx, reqs, c)
        out.append(_with_batch(result, mean_batch))
    return out


async def saturation_vs_limit(ctx: Ctx, limit: Any) -> dict[str, Any]:
    """Serving at ``ctx.saturation`` alternated with the in-process limit (standard, then robust)."""
    reqs = [embed(u, robust=False) for u in ctx.uris]
    ok, wall, errors, batches, cpu, per_round = 0, 0.0, 0, [], [], []
    for _ in range(ctx.rounds):
        await asyncio.sleep(0.5)  # let the server's OpenMP threads stop spinning after the last point
        stint = limit.run("standard", ctx.point_s)
        limit.run("robust", ctx.point_s / 2)
        result, mean_batch = await load(ctx, reqs, ctx.saturation)
        per_round.append(round(result.summary()["throughput_rps"] / stint, 3))
        ok, wall, errors = ok + len(result.ok), wall + result.summary()["wall_s"], errors + len(result.errors)
        cpu.append(result.cpu)
        if mean_batch is not None:
            batches.append(mean_batch)
    serving = ok / wall
    per_req = {k: round(sum(c[k] for c in cpu) / len(cpu), 2) for k in cpu[0]}
    return {"concurrency": ctx.saturation, "throughput_rps": round(serving, 3), "errors": errors,
            "mean_batch": round(sum(batches) / len(batches), 2) if batches else None,
            "limit_img_per_s": round(limit.img_per_s("standard"), 3), **per_req,
            "serving_vs_limit": round(serving / limit.img_per_s("standard"), 3),
            "serving_vs_limit_per_round": per_round}


async def compare(ctx: Ctx, modes: dict[str, list[Request]]) -> dict[str, dict[str, Any]]:
    """Throughput of each mode at saturation, interleaved over ``ctx.rounds`` rounds."""
    acc: dict[str, dict[str, float]] = {m: {"ok": 0, "wall": 0.0, "err": 0, "batch_sum": 0.0, "n": 0}
                                        for m in modes}
    p99: dict[str, list[float]] = {m: [] for m in modes}
    rps: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(ctx.rounds):
        for mode, reqs in modes.items():
            result, mean_batch = await load(ctx, reqs, ctx.saturation)
            s = result.summary()
            a = acc[mode]
            a["ok"] += len(result.ok)
            a["err"] += len(result.errors)
            a["wall"] += s["wall_s"]
            if mean_batch is not None:
                a["batch_sum"] += mean_batch
                a["n"] += 1
            p99[mode].append(s["p99_ms"])
            rps[mode].append(s["throughput_rps"])
    return {m: {"throughput_rps": round(a["ok"] / a["wall"], 3), "errors": int(a["err"]),
                "p99_ms_per_round": p99[m], "throughput_rps_per_round": rps[m],
                "mean_batch": round(a["batch_sum"] / a["n"], 2) if a["n"] else None}
            for m, a in acc.items()}


async def robust_cost(ctx: Ctx) -> dict[str, Any]:
    """All-standard vs all-robust vs a 50/50 mix (alternating requests) at saturation."""
    std = [embed(u, robust=False) for u in ctx.uris]
    rob = [embed(u, robust=True) for u in ctx.uris]
    mix = [embed(u, robust=i % 2 == 0) for i, u in enumerate(ctx.uris)]
    res = await compare(ctx, {"standard": std, "robust": rob, "mix": mix})
    base = res["standard"]["throughput_rps"]
    return {"modes": res, "concurrency": ctx.saturation,
            "robust_vs_standard": round(res["robust"]["throughput_rps"] / base, 3),
            "mix_vs_standard": round(res["mix"]["throughput_rps"] / base, 3)}


async def label_cache(ctx: Ctx) -> dict[str, Any]:
    """Zero-shot classification with one repeated label set vs image embedding alone."""
    cls = [classify(u) for u in ctx.uris]
    emb = [embed(u, robust=False) for u in ctx.uris]
    res = await compare(ctx, {"classify": cls, "embed": emb})
    return {"modes": res, "labels": len(LABELS), "concurrency": ctx.saturation,
            "classify_vs_embed": round(res["classify"]["throughput_rps"] / res["embed"]["throughput_rps"], 3)}

