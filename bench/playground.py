"""The playground section of ``radapt bench``: does an attack crafted on the server starve serving?

    radapt bench --playground            # builtin:clip-vit-b32-random (ViT-B/32, 224 px), float32, CPU
    radapt bench --playground --quick    # builtin:fashion-clip, short points (part of the test suite)

One ``radapt serve --playground``. Per round, interleaved: zero-shot classification from ``clients``
closed-loop clients alone, then the same load while one more client sends attacks back to back (PGD,
eps 8/255, ``steps`` steps, against standard mode). Figures: classify throughput and p50/p99 latency
in both, their ratios, the attacks done, their model time per step, and what a blocking attack (one
job holding the model for all its steps) would make a classification queued behind it wait: the whole
attack's model time. ``p99_vs_whole_attack`` below 1 means no classification waited for a whole attack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import machine
from bench.images import data_uri, make_images
from bench.loadgen import Request, run_load
from bench.server import ServerProcess

log = logging.getLogger(__name__)
BENCH_DIR = Path(__file__).resolve().parent
LABELS = ["a cat", "a dog", "a car", "a bird", "a house", "a tree", "a boat", "a plane"]


@dataclass(frozen=True)
class PlaygroundConfig:
    model: str = "builtin:clip-vit-b32-random"
    device: str = "cpu"
    dtype: str = "float32"
    clients: int = 4
    steps: int = 20
    eps: int = 8
    point_s: float = 10.0
    rounds: int = 3
    quick: bool = False
    out_dir: Path = BENCH_DIR / "out" / "playground"
    results_json: Path = BENCH_DIR / "playground.json"


def quick_config(out: Path | None = None) -> PlaygroundConfig:
    out = out or BENCH_DIR / "out" / "playground-quick"
    return PlaygroundConfig(model="builtin:fashion-clip", point_s=2.0, rounds=1, quick=True, out_dir=out,
                            results_json=out / "playground.json")


def serve_command(cfg: PlaygroundConfig) -> list[str]:
    radapt = str(Path(sys.executable).parent / "radapt")
    return [radapt, "serve", "--host", "127.0.0.1", "--port", "{port}", "--device", cfg.device, "--dtype", cfg.dtype,
            "--model", cfg.model, "--playground", "--attack-max-steps", str(cfg.steps), "--request-timeout-s", "300"]


async def _attacker(url: str, body: dict[str, Any], stop: asyncio.Event) -> list[dict[str, Any]]:
    """Attacks back to back until ``stop``; each answer's timings."""
    done: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            r = await http.post("/playground/api/attack", json=body)
            r.raise_for_status()
            done.append({"wall_s": time.perf_counter() - t0, **r.json()["timings"]})
    return done


async def measure(srv: ServerProcess, cfg: PlaygroundConfig) -> dict[str, Any]:
    images = [data_uri(b) for b in make_images(8)]
    classify = [Request.json("/v1/classify", {"image": img, "labels": LABELS, "robust": i % 2 == 1})
                for i, img in enumerate(images)]
    attack = {"image": images[0], "labels": LABELS, "eps": cfg.eps, "steps": cfg.steps}
    await run_load(srv.url, classify, cfg.clients, total=4 * cfg.clients)  # warm-up
    async with httpx.AsyncClient(base_url=srv.url, timeout=300) as http:
        (await http.post("/playground/api/attack", json=attack)).raise_for_status()
    alone, attacked, attacks = [], [], []
    for _ in range(cfg.rounds):
        alone.append((await run_load(srv.url, classify, cfg.clients, duration_s=cfg.point_s)).summary())
        stop = asyncio.Event()
        attacker = asyncio.ensure_future(_attacker(srv.url, attack, stop))
        await asyncio.sleep(0.2)  # the first attack is under way
        attacked.append((await run_load(srv.url, classify, cfg.clients, duration_s=cfg.point_s)).summary())
        stop.set()
        attacks += await attacker
    for point in alone + attacked:
        if point["errors"]:
            raise RuntimeError(f"classify errors during the playground bench: {point['error_samples']}")
    return _figures(alone, attacked, attacks, cfg)


def _figures(alone: list[dict[str, Any]], attacked: list[dict[str, Any]], attacks: list[dict[str, Any]],
             cfg: PlaygroundConfig) -> dict[str, Any]:
    def med(points: list[dict[str, Any]], key: str) -> float:
        return round(statistics.median(p[key] for p in points), 2)

    whole_ms = statistics.median(a["attack_model_s"] for a in attacks) * 1e3
    a_rps, u_rps = med(alone, "throughput_rps"), med(attacked, "throughput_rps")
    return {
        "alone": {"throughput_rps": a_rps, "p50_ms": med(alone, "p50_ms"), "p99_ms": med(alone, "p99_ms")},
        "under_attack": {"throughput_rps": u_rps, "p50_ms": med(attacked, "p50_ms"), "p99_ms": med(attacked, "p99_ms")},
        "rounds": {"alone": alone, "under_attack": attacked},
        "attacks": len(attacks),
        "attack_wall_ms": round(statistics.median(a["wall_s"] for a in attacks) * 1e3, 1),
        "attack_model_ms": round(whole_ms, 1),
        "step_model_ms": round(whole_ms / cfg.steps, 2),
        "ratios": {
            "throughput_under_attack_vs_alone": round(u_rps / a_rps, 3),
            "p50_under_attack_vs_alone": round(med(attacked, "p50_ms") / med(alone, "p50_ms"), 3),
            "p99_under_attack_vs_alone": round(med(attacked, "p99_ms") / med(alone, "p99_ms"), 3),
            "p99_vs_whole_attack": round(med(attacked, "p99_ms") / whole_ms, 3),
        },
    }


def run_playground_bench(cfg: PlaygroundConfig) -> dict[str, Any]:
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"meta": machine.describe(), "config": machine.config_dict(cfg)}
    with ServerProcess("radapt serve (playground)", serve_command(cfg), "/health/ready", cfg.out_dir / "serve.log",
                       env={"HF_HUB_OFFLINE": "1", "RADAPT_ATTACKS_PER_MINUTE": "6000"}) as srv:
        results["startup_s"] = round(srv.startup_s, 2)
        results |= asyncio.run(measure(srv, cfg))
    cfg.results_json.parent.mkdir(parents=True, exist_ok=True)
    cfg.results_json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def render(results: dict[str, Any]) -> str:
    """The Markdown section that RESULTS.md carries."""
    meta, cfg, r = results["meta"], results["config"], results["ratios"]
    a, u = results["alone"], results["under_attack"]
    return "\n".join([
        "## Playground attacks beside serving", "",
        f"Written by `radapt bench --playground{' --quick' if cfg['quick'] else ''}` on {meta['date_utc']} UTC; "
        f"{meta['cpu']}, {meta['cores']} cores; `{cfg['model']}` in {cfg['dtype']} on {cfg['device']}; "
        f"{cfg['clients']} classify clients (closed loop, half robust), {cfg['point_s']} s per point, "
        f"{cfg['rounds']} interleaved round(s); one more client attacking back to back (PGD-{cfg['steps']}, "
        f"eps {cfg['eps']}/255, against standard mode). Medians over rounds.", "",
        "| | classify req/s | p50 ms | p99 ms |", "|---|---|---|---|",
        f"| alone | {a['throughput_rps']} | {a['p50_ms']} | {a['p99_ms']} |",
        f"| under attack | {u['throughput_rps']} | {u['p50_ms']} | {u['p99_ms']} |",
        f"| ratio | {r['throughput_under_attack_vs_alone']} | {r['p50_under_attack_vs_alone']} | "
        f"{r['p99_under_attack_vs_alone']} |", "",
        f"{results['attacks']} attacks; each {results['attack_wall_ms']} ms end to end, "
        f"{results['attack_model_ms']} ms of model time ({results['step_model_ms']} ms per step). A blocking attack "
        f"would hold a queued classification for its whole model time: p99 under attack / that = "
        f"{r['p99_vs_whole_attack']} (below 1: none waited for a whole attack).", ""])

