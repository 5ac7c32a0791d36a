"""Hot-swap under traffic, and memory: resident set at idle and under load, bytes per adapter.

Adapter files are written by the bench (training-free anchors of the served model with
different sigma/alpha) into the folder the server is told to load adapters from.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench import promscrape
from bench.loadgen import Record, run_load
from bench.scenarios import Ctx, check_answer, embed

STABLE = "bench-stable"  # loaded before traffic; requests name it throughout
SWAPPED = "bench-swap"  # loaded, replaced and removed while traffic runs


def write_adapter_files(model: str, folder: Path, n: int) -> list[Path]:
    """``n`` distinct adapter files for ``model`` (white anchor, varied sigma and alpha)."""
    from adapters import save_adapter
    from adapters.method.acquire import white_adapter
    from adapters.method.model import RAdaptModel
    from adapters.zoo.loading import load_model

    loaded = load_model(model, device="cpu", dtype="float32")
    rmodel = RAdaptModel.from_loaded(loaded)
    folder.mkdir(parents=True, exist_ok=True)
    base = white_adapter(rmodel)
    out = []
    for i in range(n):
        adapter = rmodel.build_adapter(base.anchor, method="white", sigma=0.5 + 0.1 * i,
                                       alpha=0.3 + 0.02 * (i % 20), source=f"bench:{i}")
        out.append(save_adapter(adapter, folder / f"a{i:03d}.safetensors"))
    return out


async def put_adapter(http: httpx.AsyncClient, name: str, file: Path) -> tuple[float, str]:
    """POST /v1/adapters by file name in the server's adapter folder; (round trip s, op)."""
    t0 = time.perf_counter()
    response = await http.post("/v1/adapters", json={"name": name, "path": file.name})
    dt = time.perf_counter() - t0
    if response.status_code not in (200, 201):
        raise RuntimeError(f"POST /v1/adapters {name}: HTTP {response.status_code} {response.text[:200]}")
    return dt, str(response.json().get("op", ""))


async def delete_adapter(http: httpx.AsyncClient, name: str) -> float:
    t0 = time.perf_counter()
    response = await http.delete(f"/v1/adapters/{name}")
    dt = time.perf_counter() - t0
    if response.status_code not in (200, 204):
        raise RuntimeError(f"DELETE /v1/adapters/{name}: HTTP {response.status_code} {response.text[:200]}")
    return dt


async def swap_cycle(http: httpx.AsyncClient, files: list[Path], i: int) -> dict[str, float]:
    """Load ``SWAPPED``, replace it by another file, remove it: round trip of each, in ms."""
    load_s, _ = await put_adapter(http, SWAPPED, files[i % len(files)])
    swap_s, _ = await put_adapter(http, SWAPPED, files[(i + 1) % len(files)])
    remove_s = await delete_adapter(http, SWAPPED)
    return {"load": load_s * 1e3, "swap": swap_s * 1e3, "remove": remove_s * 1e3}


def _stats(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"median_ms": round(statistics.median(values), 3), "max_ms": round(values[-1], 3)}


def _overlaps(r: Record, windows: list[tuple[float, float]]) -> bool:
    return any(r.start < end and r.end > start for start, end in windows)


async def hot_swap(ctx: Ctx, files: list[Path], cycles: int, concurrency: int) -> dict[str, Any]:
    """Swap timing idle and under traffic; latency of the requests in flight during the swaps."""
    await put_adapter(ctx.http, STABLE, files[0])
    idle = [await swap_cycle(ctx.http, files, i) for i in range(cycles)]
    before = await promscrape.scrape(ctx.http)
    # traffic: standard, the default robust adapter and the stable adapter, interleaved
    reqs = [embed(u, robust=True, adapter=STABLE) if i % 3 == 0 else embed(u, robust=i % 3 == 1)
            for i, u in enumerate(ctx.uris)]
    duration = max(ctx.point_s * 2, 2.0)
    traffic = asyncio.create_task(run_load(ctx.srv.url, reqs, concurrency, duration_s=duration,
                                           check=check_answer))
    windows: list[tuple[float, float]] = []
    loaded: list[dict[str, float]] = []
    await asyncio.sleep(duration / 4)  # a stretch of traffic without swaps, as the baseline
    for i in range(cycles):
        t0 = time.perf_counter()
        loaded.append(await swap_cycle(ctx.http, files, i))
        windows.append((t0, time.perf_counter()))
        await asyncio.sleep(duration / 2 / cycles)
    result = await traffic
    after = await promscrape.scrape(ctx.http)
    during = [(r.end - r.start) * 1e3 for r in result.ok if _overlaps(r, windows)]
    outside = [(r.end - r.start) * 1e3 for r in result.ok if not _overlaps(r, windows)]
    server_ms = {op: promscrape.delta_mean(before, after, "radapt_adapter_operation_duration_seconds", op=op)
                 for op in ("load", "swap", "remove")}
    await delete_adapter(ctx.http, STABLE)
    return {
        "cycles": cycles, "concurrency": concurrency, "adapter_file_bytes": files[0].stat().st_size,
        "round_trip_idle": {op: _stats([c[op] for c in idle]) for op in ("load", "swap", "remove")},
        "round_trip_under_load": {op: _stats([c[op] for c in loaded]) for op in ("load", "swap", "remove")},
        "server_side_under_load_ms": {op: None if v is None else round(v * 1e3, 3) for op, v in server_ms.items()},
        "traffic": result.summary(),
        "in_flight_during_swaps": {"requests": len(during),
                                   "p50_ms": round(statistics.median(during), 2) if during else None,
                                   "max_ms": round(max(during), 2) if during else None},
        "outside_swaps": {"requests": len(outside),
                          "p50_ms": round(statistics.median(outside), 2) if outside else None,
                          "max_ms": round(max(outside), 2) if outside else None},
        "failed_requests": len(result.errors),
    }


async def adapter_memory(ctx: Ctx, files: list[Path]) -> dict[str, Any]:
    """Resident-set growth per loaded adapter (``len(files)`` of them), then unload them."""
    await asyncio.sleep(0.5)
    rss0 = ctx.srv.rss_bytes()
    names = [f"bench-mem-{i}" for i in range(len(files))]
    for name, f in zip(names, files, strict=True):
        await put_adapter(ctx.http, name, f)
    await asyncio.sleep(0.5)
    rss1 = ctx.srv.rss_bytes()
    for name in names:
        await delete_adapter(ctx.http, name)
    from adapters import load_adapter

    anchor = load_adapter(files[0]).anchor
    return {"adapters": len(files), "rss_before": rss0, "rss_after": rss1,
            "rss_bytes_per_adapter": round((rss1 - rss0) / len(files)),
            "anchor_shape": list(anchor.shape), "anchor_elements": anchor.numel(),
            "file_bytes": files[0].stat().st_size}
