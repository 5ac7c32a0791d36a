"""One benchmark run: the limit, our server in each dtype, then the peer; then the report."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import machine, report
from bench.images import data_uri, make_images
from bench.limit import Limit
from bench.loadgen import Request, run_load
from bench.scenarios import Ctx, label_cache, robust_cost, saturation_vs_limit, sweep
from bench.server import ServerProcess
from bench.swap import adapter_memory, hot_swap, write_adapter_files

log = logging.getLogger(__name__)
BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class BenchConfig:
    model: str = "builtin:clip-vit-b32-random"
    device: str = "cpu"  # ours and the limit; the peer always runs on CPU
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    batch_size: int = 16  # the server's max batch size, the peer's, and the limit's
    max_wait_ms: float = 5.0
    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    point_s: float = 8.0  # seconds per load point
    rounds: int = 2  # interleaved rounds of each comparison
    images: int = 64
    swap_cycles: int = 10
    memory_adapters: int = 16
    peer: bool = True
    quick: bool = False
    out_dir: Path = BENCH_DIR / "out"
    results_md: Path = BENCH_DIR / "RESULTS.md"
    results_json: Path = BENCH_DIR / "results.json"
    analysis: Path | None = BENCH_DIR / "ANALYSIS.md"  # hand-written causes of missed targets, appended
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def saturation(self) -> int:
        return max(self.concurrencies)


def quick_config(out_dir: Path | None = None) -> BenchConfig:
    """Under a minute: tiny model, one dtype, short points, no peer; results stay in out_dir."""
    out = out_dir or BENCH_DIR / "out" / "quick"
    return BenchConfig(model="builtin:tiny-clip", dtypes=("float32",), concurrencies=(1, 4, 16), point_s=1.0,
                       rounds=1, images=16, swap_cycles=3, memory_adapters=4, peer=False, quick=True,
                       out_dir=out, results_md=out / "RESULTS.md", results_json=out / "results.json",
                       analysis=None)


def serve_command(cfg: BenchConfig, dtype: str) -> tuple[list[str], Path]:
    """``radapt serve`` with a config file, as a user would start it."""
    conf = cfg.out_dir / f"serve-{dtype}.yaml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        f"models: [{cfg.model!r}]\ndevice: {cfg.device}\ndtype: {dtype}\nmax_batch_size: {cfg.batch_size}\n"
        f"max_wait_ms: {cfg.max_wait_ms}\nmax_queue: 4096\nrequest_timeout_s: 120\n"
        f"adapter_dir: {str(cfg.out_dir / 'adapters')!r}\n")
    radapt = str(Path(sys.executable).parent / "radapt")
    return [radapt, "serve", "--config", str(conf), "--host", "127.0.0.1", "--port", "{port}"], conf


async def warm_up(url: str, requests: list[Request], concurrency: int, total: int) -> None:
    await run_load(url, requests, concurrency, total=total)


async def measure_ours(cfg: BenchConfig, dtype: str, images: list[bytes], files: list[Path]) -> dict[str, Any]:
    from bench.scenarios import embed

    uris = [data_uri(b) for b in images]
    limit = Limit(cfg.model, dtype, cfg.batch_size, images, cfg.device)
    cmd, conf = serve_command(cfg, dtype)
    with ServerProcess(f"radapt serve ({dtype})", cmd, "/health/ready", cfg.out_dir / f"serve-{dtype}.log",
                       env={"HF_HUB_OFFLINE": "1"}) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=120) as http:
            ctx = Ctx(srv, http, uris, cfg.point_s, cfg.rounds, cfg.saturation,
                      pids=lambda: [os.getpid(), *srv.pids()])
            await asyncio.sleep(1.0)
            rss_idle = srv.rss_bytes()
            await warm_up(srv.url, [embed(u, robust=i % 2 == 0) for i, u in enumerate(uris)],
                          cfg.saturation, cfg.batch_size * 3)
            out: dict[str, Any] = {"startup_s": round(srv.startup_s, 2), "config": conf.read_text()}
            out["sweep"] = await sweep(ctx, cfg.concurrencies)
            out["saturation"] = await saturation_vs_limit(ctx, limit)
            out["limit"] = limit.as_dict()
            out["robust_cost"] = await robust_cost(ctx)
            out["label_cache"] = await label_cache(ctx)
            out["hot_swap"] = await hot_swap(ctx, files, cfg.swap_cycles, min(16, cfg.saturation))
            mem = await adapter_memory(ctx, files[:cfg.memory_adapters])
            out["memory"] = {"rss_idle_bytes": rss_idle, "rss_peak_under_load_bytes": ctx.rss_peak, **mem}
            out["foreign_cores"] = {"mean": round(sum(ctx.foreign) / len(ctx.foreign), 2),
                                    "max": max(ctx.foreign)}
    return out


def measure_peer(cfg: BenchConfig, uris: list[str]) -> dict[str, Any]:
    """infinity-emb on the same checkpoint, images and concurrencies; a failure is recorded."""
    from bench import peer

    try:
        exe = peer.ensure_venv()
        versions = peer.peer_version(exe)
        ckpt = peer.export_checkpoint(cfg.model, cfg.out_dir / "peer-checkpoint")
    except (RuntimeError, OSError, ValueError) as exc:
        return {"available": False, "reason": f"{exc.__class__.__name__}: {exc}"[:2000]}
    served = "bench-clip"
    reqs = [Request.json("/embeddings", {"model": served, "input": [u], "modality": "image"}, "peer")
            for u in uris]

    async def drive(srv: ServerProcess) -> dict[str, Any]:
        await warm_up(srv.url, reqs, cfg.saturation, cfg.batch_size * 3)
        rss_idle = srv.rss_bytes()
        points = []
        for c in cfg.concurrencies:
            result = await run_load(srv.url, reqs, c, duration_s=cfg.point_s)
            points.append(result.summary() | {"rss_bytes": srv.rss_bytes()})
        return {"sweep": points, "rss_idle_bytes": rss_idle}

    with peer.peer_server(exe, ckpt, served, cfg.batch_size, cfg.out_dir / "peer.log") as srv:
        out = asyncio.run(drive(srv))
    return {"available": True, "versions": versions, "startup_s": round(srv.startup_s, 2),
            "dtype": "float32", "dtype_note": peer.__doc__.split("- on CPU", 1)[1].strip(), **out}


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    meta = machine.describe()
    images = make_images(cfg.images)
    uris = [data_uri(b) for b in images]
    files = write_adapter_files(cfg.model, cfg.out_dir / "adapters", max(cfg.memory_adapters, 4))
    results: dict[str, Any] = {"meta": meta, "config": machine.config_dict(cfg), "runs": {}}
    for dtype in cfg.dtypes:
        log.info("serving and limit: %s", dtype)
        results["runs"][dtype] = asyncio.run(measure_ours(cfg, dtype, images, files))
    skipped = {"available": False, "reason": "skipped (--quick or --no-peer)"}
    results["peer"] = measure_peer(cfg, uris) if cfg.peer else skipped
    results["meta"]["date_end_utc"] = machine.describe()["date_utc"]
    results["summary"] = report.summarise(results)
    report.write(results, cfg.results_md, cfg.results_json, cfg.analysis)
    return results


