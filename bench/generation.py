"""The generation section of ``radapt bench``: continuous batching measured over HTTP.

    radapt bench --generation            # tiny-llava and tiny-qwen2-vl, float32, CPU
    radapt bench --generation --quick    # tiny-llava, short points (part of the test suite)

Per chat model, all in one server run so every ratio compares figures of the same run:
- head-of-line: median latency of a 4-token chat while a 400-token one is decoding / alone;
- scaling: completion tokens/s with 16 closed-loop clients (max_tokens cycling 16, 64, 256) / 1 client;
- robust cost: tokens/s all-robust / all-standard and 50/50 mix / all-standard (interleaved rounds);
- cost: server CPU ms per generated token, and RSS growth per running sequence at 16 clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from bench import machine, promscrape
from bench.images import data_uri, make_images
from bench.loadgen import Request, run_load
from bench.server import ServerProcess

log = logging.getLogger(__name__)
BENCH_DIR = Path(__file__).resolve().parent
TARGETS = {"head_of_line": ("<=", 1.5), "scaling_16_vs_1": (">=", 4.0), "robust_vs_standard": (">=", 0.97),
           "mix_vs_standard": (">=", 0.97)}


@dataclass(frozen=True)
class GenConfig:
    models: tuple[str, ...] = ("builtin:tiny-llava", "builtin:tiny-qwen2-vl")
    device: str = "cpu"
    dtype: str = "float32"
    clients: int = 16
    token_choices: tuple[int, ...] = (16, 64, 256)
    long_tokens: int = 400
    short_tokens: int = 4
    hol_samples: int = 10
    point_s: float = 10.0
    torch_threads: int | None = 1  # the tiny models' forward gains nothing from intra-op threads (docs/bench.md)
    rounds: int = 3
    quick: bool = False
    out_dir: Path = BENCH_DIR / "out" / "generation"
    results_json: Path = BENCH_DIR / "generation.json"


def quick_config(out: Path | None = None) -> GenConfig:
    out = out or BENCH_DIR / "out" / "generation-quick"
    return GenConfig(models=("builtin:tiny-llava",), hol_samples=3, point_s=1.5, rounds=1, quick=True,
                     out_dir=out, results_json=out / "generation.json")


def chat(model: str, image: str, max_tokens: int, robust: bool, tag: str = "") -> Request:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                             {"type": "text", "text": "Describe the picture in detail."}]}]
    # ignore_eos: every mode does the same work (a random tiny model's end of turn depends on the mode's text)
    return Request.json("/v1/chat/completions", {"model": model, "messages": messages, "max_tokens": max_tokens,
                                                 "robust": robust, "ignore_eos": True}, tag)


def tokens_of(_: Request, response: httpx.Response) -> tuple[bool, str]:
    """A load-generator check that keeps each answer's completion tokens as its note."""
    if response.status_code != 200:
        return False, f"HTTP {response.status_code}: {response.text[:120]}"
    return True, str(response.json()["usage"]["completion_tokens"])


async def head_of_line(http: httpx.AsyncClient, model: str, image: str, cfg: GenConfig) -> dict[str, Any]:
    """A short chat alone, then with a long one decoding beside it (a new long one each sample)."""
    short = json.loads(chat(model, image, cfg.short_tokens, False).body)
    long = json.loads(chat(model, image, cfg.long_tokens, False).body)

    async def timed() -> float:
        t0 = time.perf_counter()
        r = await http.post("/v1/chat/completions", json=short)
        r.raise_for_status()
        return time.perf_counter() - t0

    alone = [await timed() for _ in range(cfg.hol_samples)]
    beside = []
    for _ in range(cfg.hol_samples):
        background = asyncio.ensure_future(http.post("/v1/chat/completions", json=long))
        await asyncio.sleep(0.05)  # the long one is prefilled and decoding
        beside.append(await timed())
        long_done = await background
        long_done.raise_for_status()
    a, b = statistics.median(alone), statistics.median(beside)
    return {"alone_ms": round(a * 1e3, 2), "with_long_ms": round(b * 1e3, 2), "ratio": round(b / a, 3)}


async def load_point(srv: ServerProcess, requests: list[Request], clients: int, seconds: float) -> dict[str, Any]:
    """Closed-loop load for ``seconds``; tokens/s and CPU are read inside a steady window (after a
    ramp of 20%, before the clients' last answers drain), from the server's own token counter."""
    pids = srv.pids()
    foreign = machine.ForeignLoad(lambda: [os.getpid(), *srv.pids()]).start()
    rss = [srv.rss_bytes()]
    sampler = asyncio.ensure_future(_sample_rss(srv, rss))
    load = asyncio.ensure_future(run_load(srv.url, requests, clients, duration_s=seconds, check=tokens_of,
                                          timeout_s=300))
    await asyncio.sleep(seconds * 0.2)
    tokens0, cpu0, t0 = await _generated(srv), machine.cpu_seconds(pids), time.perf_counter()
    await asyncio.sleep(seconds * 0.8)
    tokens1, cpu1, t1 = await _generated(srv), machine.cpu_seconds(pids), time.perf_counter()
    result = await load
    sampler.cancel()
    tokens = tokens1 - tokens0
    return {**result.summary(), "window_s": round(t1 - t0, 3), "tokens": tokens,
            "tokens_per_s": round(tokens / (t1 - t0), 2),
            "cpu_ms_per_token": round((cpu1 - cpu0) * 1e3 / max(tokens, 1), 3), "rss_peak_bytes": max(rss),
            "foreign_cores": foreign.cores()}


async def _generated(srv: ServerProcess) -> int:
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
        return int(promscrape.total(await promscrape.scrape(http), "radapt_generated_tokens_total"))


async def _sample_rss(srv: ServerProcess, out: list[int]) -> None:
    while True:
        await asyncio.sleep(0.2)
        out.append(srv.rss_bytes())


async def measure_model(srv: ServerProcess, model: str, images: list[str], cfg: GenConfig) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=srv.url, timeout=300) as http:
        mixed = [chat(model, images[i % len(images)], cfg.token_choices[i % len(cfg.token_choices)], False)
                 for i in range(max(len(images), len(cfg.token_choices)) * 2)]
        await run_load(srv.url, mixed, cfg.clients, total=cfg.clients, check=tokens_of)  # warm-up
        rss_idle = srv.rss_bytes()
        hol = await head_of_line(http, model, images[0], cfg)
        one = await load_point(srv, mixed, 1, cfg.point_s)
        many = await load_point(srv, mixed, cfg.clients, cfg.point_s)
        modes: dict[str, list[float]] = {"standard": [], "robust": [], "mix": []}
        for _ in range(cfg.rounds):
            for mode in modes:
                reqs = [replace(r, body=_with_robust(r.body, mode == "robust" or (mode == "mix" and i % 2 == 1)))
                        for i, r in enumerate(mixed)]
                point = await load_point(srv, reqs, cfg.clients, cfg.point_s)
                modes[mode].append(point["tokens_per_s"])
    tps = {m: statistics.mean(v) for m, v in modes.items()}
    rounds = {m: [round(x, 1) for x in v] for m, v in modes.items()}
    return {
        "head_of_line": hol, "one_client": one, "clients": many,
        "scaling_16_vs_1": round(many["tokens_per_s"] / max(one["tokens_per_s"], 1e-9), 3),
        "modes_tokens_per_s": {m: round(v, 2) for m, v in tps.items()}, "modes_rounds": rounds,
        "robust_vs_standard": round(tps["robust"] / tps["standard"], 3),
        "mix_vs_standard": round(tps["mix"] / tps["standard"], 3),
        "rss_idle_bytes": rss_idle,
        "rss_per_running_sequence_bytes": max(0, many["rss_peak_bytes"] - rss_idle) // cfg.clients,
    }


def _with_robust(body: bytes, robust: bool) -> bytes:
    payload = json.loads(body)
    payload["robust"] = robust
    return json.dumps(payload).encode()


def serve_command(cfg: GenConfig) -> list[str]:
    radapt = str(Path(sys.executable).parent / "radapt")
    cmd = [radapt, "serve", "--host", "127.0.0.1", "--port", "{port}", "--device", cfg.device, "--dtype", cfg.dtype,
           "--request-timeout-s", "300", "--max-queue", "4096", "--max-running-requests", str(max(32, cfg.clients))]
    if cfg.torch_threads is not None:
        cmd += ["--torch-threads", str(cfg.torch_threads)]
    for m in cfg.models:
        cmd += ["--model", m]
    return cmd


def run_generation_bench(cfg: GenConfig) -> dict[str, Any]:
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    images = [data_uri(b) for b in make_images(8)]
    results: dict[str, Any] = {"meta": machine.describe(), "config": machine.config_dict(cfg), "models": {}}
    with ServerProcess("radapt serve (generation)", serve_command(cfg), "/health/ready",
                       cfg.out_dir / "serve.log", env={"HF_HUB_OFFLINE": "1"}) as srv:
        results["startup_s"] = round(srv.startup_s, 2)
        for model in cfg.models:
            log.info("generation bench: %s", model)
            results["models"][model] = asyncio.run(measure_model(srv, model, images, cfg))
    results["targets"] = {model: targets(r) for model, r in results["models"].items()}
    cfg.results_json.parent.mkdir(parents=True, exist_ok=True)
    cfg.results_json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def targets(r: dict[str, Any]) -> dict[str, Any]:
    values = {"head_of_line": r["head_of_line"]["ratio"], "scaling_16_vs_1": r["scaling_16_vs_1"],
              "robust_vs_standard": r["robust_vs_standard"], "mix_vs_standard": r["mix_vs_standard"]}
    return {k: {"value": v, "target": f"{TARGETS[k][0]} {TARGETS[k][1]}",
                "met": v <= TARGETS[k][1] if TARGETS[k][0] == "<=" else v >= TARGETS[k][1]} for k, v in values.items()}


def render(results: dict[str, Any]) -> str:
    """The Markdown section that RESULTS.md carries."""
    meta, cfg = results["meta"], results["config"]
    lines = ["## Generation (continuous batching)", "",
             f"Written by `radapt bench --generation{' --quick' if cfg['quick'] else ''}` on {meta['date_utc']} UTC; "
             f"{meta['cpu']}, {meta['cores']} cores, AVX-512 BF16: {meta['avx512_bf16']}; {cfg['dtype']} on "
             f"{cfg['device']}, torch threads {cfg.get('torch_threads') or 'default'}; "
             f"{cfg['clients']} clients, max_tokens cycling {list(cfg['token_choices'])}, one image "
             f"per chat, {cfg['point_s']} s per point, {cfg['rounds']} round(s) per mode comparison.", "",
             "| model | figure | value | target | met |", "|---|---|---|---|---|"]
    busy: list[str] = []
    for model, checks in results["targets"].items():
        for key, t in checks.items():
            lines.append(f"| `{model}` | {key} | {t['value']} | {t['target']} | {'yes' if t['met'] else '**no**'} |")
    lines += ["", "| model | 4-token chat alone / beside a 400-token one (ms) | tokens/s 1 client / 16 | "
              "CPU ms per token 1 / 16 | tokens/s standard / robust / mix | RSS per running sequence |",
              "|---|---|---|---|---|---|"]
    for model, r in results["models"].items():
        h, one, many, m = r["head_of_line"], r["one_client"], r["clients"], r["modes_tokens_per_s"]
        busy.append(f"`{model}` {many.get('foreign_cores')}")
        lines.append(f"| `{model}` | {h['alone_ms']} / {h['with_long_ms']} | {one['tokens_per_s']} / "
                     f"{many['tokens_per_s']} | {one['cpu_ms_per_token']} / {many['cpu_ms_per_token']} | "
                     f"{m['standard']} / {m['robust']} / {m['mix']} | "
                     f"{r['rss_per_running_sequence_bytes'] / 2**20:.2f} MiB |")
    lines += ["", "Cores kept busy by other processes during the 16-client point (0 = a quiet machine): "
              + ", ".join(busy) + "."]
    return "\n".join(lines) + "\n"

