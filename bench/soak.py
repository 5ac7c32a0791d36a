"""Soak: a real ``radapt serve`` driven past saturation for N minutes, over HTTP only.

    report = run_soak(SoakConfig(duration_s=600))

1. Start the server (tiny CLIP + tiny LLaVA by default, two adapter files in its adapter
   directory) and measure its capacity: a few seconds of closed-loop load with the soak's own mix.
2. Drive it open-loop at ``overload`` x that capacity (2x: its queue fills, it must shed load with
   429/504) with classify and embeddings (robust, standard, an adapter), chat (plain and
   streaming), adapter hot-swaps and removals, a share of bad inputs (each must get its 4xx) and
   clients that hang up mid-request.
3. Sample the server's resident memory (/proc, every process below it) and its queue depth
   (/metrics) throughout; afterwards check that it still serves.

It fails when any answer is a 5xx other than 504 (or a transport error the soak did not cause),
a bad input is accepted, the queue outgrows ``max_queue``, resident memory grows more than
``max_rss_growth`` between the end of the warm-up and the end, or the server stops serving.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench import machine
from bench.images import data_uri, make_images
from bench.server import ServerProcess

log = logging.getLogger(__name__)
ALLOWED_5XX = {504}
ADAPTER_FILES = ("soft.safetensors", "hard.safetensors")


@dataclass(frozen=True)
class SoakConfig:
    duration_s: float = 600.0
    overload: float = 2.0  # arrival rate over measured capacity
    clip_model: str = "builtin:tiny-clip"
    chat_model: str | None = "builtin:tiny-llava"
    device: str = "cpu"
    dtype: str = "float32"
    max_queue: int = 64
    request_timeout_s: float = 5.0
    calibrate_s: float = 4.0
    calibrate_concurrency: int = 8
    bad_share: float = 0.15
    disconnect_share: float = 0.05
    max_rss_growth: float = 0.05
    warmup_share: float = 0.2  # RSS baseline: the window right after this share of the run
    max_inflight: int = 1024  # client-side cap on open requests (arrivals beyond it are counted, not sent)
    seed: int = 0
    workdir: Path | None = None


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)  # status code -> count
    by_kind: dict[str, Counter] = field(default_factory=dict)  # kind -> Counter(status)
    bad_accepted: list[str] = field(default_factory=list)
    transport_errors: Counter = field(default_factory=Counter)
    disconnected: int = 0
    skipped: int = 0

    def add(self, kind: str, status: int) -> None:
        self.statuses[status] += 1
        self.by_kind.setdefault(kind, Counter())[status] += 1


# -- requests -----------------------------------------------------------------------------------------
def _png(size: tuple[int, int], color: tuple[int, int, int] = (90, 160, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class Mix:
    """Weighted request kinds; ``next()`` -> (kind, method, path, body bytes | None, expect_4xx, stream)."""

    def __init__(self, cfg: SoakConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.images = [data_uri(j) for j in make_images(8, size=64, seed=cfg.seed)]
        self.adapter_turn = 0
        good: list[tuple[float, str]] = [(20, "classify"), (15, "classify_robust"), (5, "classify_adapter"),
                                         (10, "embed_image"), (10, "embed_text"), (3, "adapter_swap"),
                                         (1, "adapter_remove")]
        if cfg.chat_model:
            good += [(10, "chat"), (5, "chat_stream")]
        total = sum(w for w, _ in good)
        self.kinds = [k for _, k in good] + ["bad"]
        self.weights = [w / total * (1 - cfg.bad_share) for w, _ in good] + [cfg.bad_share]
        self.bad = self._bad_requests()

    def _bad_requests(self) -> list[tuple[str, str, bytes]]:
        clip = self.cfg.clip_model
        ok = self.images[0]
        out: list[tuple[str, str, bytes]] = [
            ("/v1/classify", "invalid json", b'{"image": "x", "labels": ['),
            ("/v1/classify", "not utf-8", b'{"image": "\xff\xfe"}'),
            ("/v1/classify", "bad base64", _json({"model": clip, "image": "not*base64!", "labels": ["a"]})),
            ("/v1/classify", "not an image", _json({"model": clip, "image": base64.b64encode(b"hi" * 40).decode(),
                                                    "labels": ["a"]})),
            ("/v1/classify", "thin strip", _json({"model": clip, "image": _png((2, 900)), "labels": ["a"]})),
            ("/v1/classify", "unknown model", _json({"model": "nope", "image": ok, "labels": ["a"]})),
            ("/v1/classify", "unknown field", _json({"model": clip, "image": ok, "labels": ["a"], "x": 1})),
            ("/v1/classify", "duplicate labels", _json({"model": clip, "image": ok, "labels": ["a", "a"]})),
            ("/v1/embeddings", "empty input", _json({"model": clip, "input": []})),
            ("/v1/adapters", "nul path", _json({"name": "evil", "path": "a\u0000b"})),
            ("/v1/adapters", "escape path", _json({"name": "evil", "path": "../../etc/passwd"})),
        ]
        if self.cfg.chat_model:
            out.append(("/v1/chat/completions", "no messages", _json({"model": self.cfg.chat_model, "messages": []})))
        return out

    def next(self) -> tuple[str, str, str, bytes | None, bool, bool]:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        img = self.rng.choice(self.images)
        clip, chat = self.cfg.clip_model, self.cfg.chat_model
        labels = self.rng.sample(["cat", "dog", "car", "tree", "boat", "house", "bird"], 3)
        if kind == "bad":
            path, what, body = self.rng.choice(self.bad)
            return f"bad:{what}", "POST", path, body, True, False
        if kind.startswith("classify"):
            body: dict[str, Any] = {"model": clip, "image": img, "labels": labels}
            if kind == "classify_robust":
                body["robust"] = True
            elif kind == "classify_adapter":
                body["adapter"] = "soak"
            return kind, "POST", "/v1/classify", _json(body), False, False
        if kind == "embed_image":
            return kind, "POST", "/v1/embeddings", _json({"model": clip, "input": [img], "modality": "image",
                                                          "robust": self.rng.random() < 0.5}), False, False
        if kind == "embed_text":
            return kind, "POST", "/v1/embeddings", _json({"model": clip, "input": labels}), False, False
        if kind == "adapter_swap":
            self.adapter_turn += 1
            path = ADAPTER_FILES[self.adapter_turn % 2]
            return kind, "POST", "/v1/adapters", _json({"name": "soak", "path": path, "model": clip}), False, False
        if kind == "adapter_remove":
            return kind, "DELETE", f"/v1/adapters/soak?model={clip}", None, False, False
        stream = kind == "chat_stream"
        content = [{"type": "image_url", "image_url": {"url": img}}, {"type": "text", "text": "What is this?"}]
        body = {"model": chat, "messages": [{"role": "user", "content": content}], "max_tokens": 4,
                "stream": stream, "robust": self.rng.random() < 0.5}
        return kind, "POST", "/v1/chat/completions", _json(body), False, stream


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


# -- driving -------------------------------------------------------------------------------------------
async def _send(http: httpx.AsyncClient, method: str, path: str, body: bytes | None, stream: bool) -> int:
    headers = {"content-type": "application/json"} if body is not None else {}
    if stream:
        async with http.stream(method, path, content=body, headers=headers) as resp:
            async for _ in resp.aiter_bytes():
                pass
            return resp.status_code
    resp = await http.request(method, path, content=body, headers=headers)
    return resp.status_code


async def _one(http: httpx.AsyncClient, mix: Mix, tally: Tally, disconnect: float | None) -> None:
    kind, method, path, body, expect_4xx, stream = mix.next()
    task = asyncio.ensure_future(_send(http, method, path, body, stream))
    try:
        if disconnect is not None:
            done, _ = await asyncio.wait({task}, timeout=disconnect)
            if not done:  # the client hangs up mid-request
                task.cancel()
                tally.disconnected += 1
                return
        status = await task
    except asyncio.CancelledError:
        task.cancel()
        raise
    except httpx.HTTPError as exc:
        tally.transport_errors[type(exc).__name__] += 1
        return
    tally.add(kind.split(":")[0], status)
    if expect_4xx and not 400 <= status < 500:
        tally.bad_accepted.append(f"{kind} -> {status}")


async def calibrate(url: str, cfg: SoakConfig) -> float:
    """Requests per second the server answers under closed-loop load with the soak's mix."""
    mix, tally = Mix(cfg), Tally()
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        end = time.perf_counter() + cfg.calibrate_s
        start = time.perf_counter()

        async def worker() -> None:
            while time.perf_counter() < end:
                await _one(http, mix, tally, None)
        await asyncio.gather(*(worker() for _ in range(cfg.calibrate_concurrency)))
        wall = time.perf_counter() - start
    return max(1.0, sum(tally.statuses.values()) / wall)


async def drive(url: str, cfg: SoakConfig, rate: float, sample: Callable[[], None]) -> Tally:
    """Open-loop arrivals at ``rate`` per second for ``cfg.duration_s``; ``sample()`` runs each second."""
    mix, tally = Mix(cfg), Tally()
    rng = random.Random(cfg.seed + 1)
    limits = httpx.Limits(max_connections=cfg.max_inflight, max_keepalive_connections=64)
    tasks: set[asyncio.Task] = set()
    async with httpx.AsyncClient(base_url=url, timeout=cfg.request_timeout_s * 4 + 30, limits=limits) as http:
        start = time.perf_counter()
        next_arrival, next_sample = start, start
        while (now := time.perf_counter()) - start < cfg.duration_s:
            if now >= next_sample:
                await asyncio.to_thread(sample)
                next_sample += 1.0
            while next_arrival <= now:
                next_arrival += rng.expovariate(rate)
                if len(tasks) >= cfg.max_inflight:
                    tally.skipped += 1
                    continue
                hang_up = rng.uniform(0.001, 0.2) if rng.random() < cfg.disconnect_share else None
                task = asyncio.create_task(_one(http, mix, tally, hang_up))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(min(0.01, max(0.0, next_arrival - time.perf_counter())))
        if tasks:
            await asyncio.wait(tasks, timeout=cfg.request_timeout_s * 4 + 30)
    return tally


def queue_depth(url: str) -> float:
    """The largest radapt_queue_depth over models (0 when /metrics does not answer)."""
    try:
        text = httpx.get(url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("radapt_queue_depth{")]
    return max(values, default=0.0)


def still_serves(url: str, cfg: SoakConfig) -> bool:
    try:
        ready = httpx.get(url + "/health/ready", timeout=10).status_code == 200
        body = {"model": cfg.clip_model, "image": _png((40, 30)), "labels": ["a", "b"]}
        return ready and httpx.post(url + "/v1/classify", json=body, timeout=30).status_code == 200
    except httpx.HTTPError:
        return False


def write_adapters(folder: Path, cfg: SoakConfig) -> None:
    """Two white adapters of the CLIP model (different sigma/alpha) to hot-swap between."""
    from adapters import RAdaptModel, save_adapter
    from adapters.method.acquire import white_adapter
    from adapters.zoo.loading import load_model

    rmodel = RAdaptModel.from_loaded(load_model(cfg.clip_model, device="cpu", dtype="float32"))
    for name, sigma, alpha in zip(ADAPTER_FILES, (0.5, 1.5), (0.3, 0.7), strict=True):
        save_adapter(white_adapter(rmodel, sigma, alpha, source="soak"), folder / name)


def rss_growth(samples: list[tuple[float, int]], duration_s: float, warmup_share: float) -> dict[str, float]:
    """Median RSS just after the warm-up vs over the last tenth of the run."""
    window = max(2.0, duration_s * 0.1)
    t0 = duration_s * warmup_share
    base = [r for t, r in samples if t0 <= t < t0 + window] or [samples[0][1]]
    end = [r for t, r in samples if t >= duration_s - window] or [samples[-1][1]]
    b, e = statistics.median(base), statistics.median(end)
    return {"baseline_mib": round(b / 2**20, 1), "end_mib": round(e / 2**20, 1),
            "peak_mib": round(max(r for _, r in samples) / 2**20, 1), "growth": round(e / b - 1, 4)}


def run_soak(cfg: SoakConfig) -> dict[str, Any]:
    """Start the server, soak it, stop it; the report says what happened and whether it passed."""
    work = Path(cfg.workdir or tempfile.mkdtemp(prefix="radapt-soak-"))
    adapters = work / "adapters"
    adapters.mkdir(parents=True, exist_ok=True)
    write_adapters(adapters, cfg)
    import sys

    cmd = [sys.executable, "-m", "service.cli", "--log-level", "WARNING", "serve", "--host", "127.0.0.1",
           "--port", "{port}", "--device", cfg.device, "--dtype", cfg.dtype, "--model", cfg.clip_model,
           "--adapter-dir", str(adapters), "--max-queue", str(cfg.max_queue),
           "--request-timeout-s", str(cfg.request_timeout_s)]
    if cfg.chat_model:
        cmd += ["--model", cfg.chat_model]
    env = {"RADAPT_MAX_NEW_TOKENS": "4", "RADAPT_MAX_NEW_TOKENS_LIMIT": "16"}
    with ServerProcess("radapt-soak", cmd, "/health/ready", work / "server.log", env=env) as server:
        rate_capacity = asyncio.run(calibrate(server.url, cfg))
        rate = rate_capacity * cfg.overload
        samples: list[tuple[float, int]] = []
        depths: list[float] = []
        t0 = time.perf_counter()

        def sample() -> None:
            samples.append((time.perf_counter() - t0, server.rss_bytes()))
            depths.append(queue_depth(server.url))

        log.info("soak: capacity %.1f req/s, driving %.1f req/s for %.0f s", rate_capacity, rate, cfg.duration_s)
        tally = asyncio.run(drive(server.url, cfg, rate, sample))
        sample()
        serves = still_serves(server.url, cfg)
        log_tail = server.log_tail(15)
    memory = rss_growth(samples, cfg.duration_s, cfg.warmup_share)
    bad_status = {s: n for s, n in tally.statuses.items() if s >= 500 and s not in ALLOWED_5XX}
    failures = []
    if bad_status:
        failures.append(f"5xx answers: {bad_status}")
    if tally.transport_errors:
        failures.append(f"transport errors: {dict(tally.transport_errors)}")
    if tally.bad_accepted:
        failures.append(f"bad inputs not refused with a 4xx: {tally.bad_accepted[:5]}")
    if max(depths, default=0) > cfg.max_queue:
        failures.append(f"queue depth {max(depths)} exceeded max_queue {cfg.max_queue}")
    if memory["growth"] > cfg.max_rss_growth:
        failures.append(f"RSS grew {memory['growth']:.1%} (limit {cfg.max_rss_growth:.0%})")
    if not serves:
        failures.append("the server did not serve after the soak")
    if not tally.statuses.get(200):
        failures.append("no request succeeded")
    return {
        "config": machine.config_dict(cfg),
        "capacity_rps": round(rate_capacity, 2), "offered_rps": round(rate, 2),
        "requests": sum(tally.statuses.values()), "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "by_kind": {k: {str(s): n for s, n in sorted(c.items())} for k, c in sorted(tally.by_kind.items())},
        "disconnected": tally.disconnected, "skipped_client_cap": tally.skipped,
        "transport_errors": dict(tally.transport_errors), "bad_accepted": tally.bad_accepted[:20],
        "max_queue_depth": max(depths, default=0.0), "memory": memory, "serves_after": serves,
        "passed": not failures, "failures": failures, "server_log_tail": log_tail if failures else "",
    }


def report_markdown(report: dict[str, Any], machine: str = "") -> str:
    cfg = report["config"]
    mem = report["memory"]
    lines = [
        "# Soak result", "",
        f"`radapt soak`: {cfg['duration_s']:.0f} s at {cfg['overload']}x measured capacity "
        f"({report['capacity_rps']} req/s measured, {report['offered_rps']} req/s offered), "
        f"models {cfg['clip_model']} + {cfg['chat_model']}, {cfg['dtype']} on {cfg['device']}, "
        f"max_queue {cfg['max_queue']}, request_timeout_s {cfg['request_timeout_s']}. {machine}".rstrip(), "",
        f"**{'PASSED' if report['passed'] else 'FAILED'}**" + ("" if report["passed"] else
                                                            ": " + "; ".join(report["failures"])), "",
        f"- requests answered: {report['requests']}; statuses: {report['statuses']}",
        f"- arrivals not sent because {cfg['max_inflight']} requests were already open (client and server share "
        f"the CPUs): {report['skipped_client_cap']}",
        f"- client hang-ups mid-request: {report['disconnected']}; transport errors: "
        f"{report['transport_errors'] or 'none'}; bad inputs accepted: {len(report['bad_accepted'])}",
        f"- queue depth max: {report['max_queue_depth']:.0f} (bound {cfg['max_queue']})",
        f"- server RSS: {mem['baseline_mib']} MiB after warm-up, {mem['end_mib']} MiB at the end "
        f"(growth {mem['growth']:.2%}, limit {cfg['max_rss_growth']:.0%}), peak {mem['peak_mib']} MiB",
        f"- serves after the soak: {report['serves_after']}", "",
        "| kind | statuses |", "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in report["by_kind"].items()]
    return "\n".join(lines) + "\n"
