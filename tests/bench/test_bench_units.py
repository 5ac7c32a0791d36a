"""The load generator and the report's arithmetic, without a server."""

from __future__ import annotations

import asyncio
import copy
import os

import httpx
import pytest

from bench import report
from bench.loadgen import Request, run_load
from bench.server import ServerProcess, _tree

pytestmark = pytest.mark.unit


def _client(fail_every: int) -> httpx.AsyncClient:
    seen = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["n"] += 1
        return httpx.Response(500 if seen["n"] % fail_every == 0 else 200, json={})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://bench.invalid")


def test_run_load_counts_requests_and_errors() -> None:
    reqs = [Request.json("/x", {"i": i}) for i in range(3)]
    result = asyncio.run(run_load("http://bench.invalid", reqs, 4, total=20, client=_client(5)))
    s = result.summary()
    assert s["requests"] == 20 and s["errors"] == 4 and s["concurrency"] == 4
    assert s["throughput_rps"] > 0 and s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"]
    assert s["error_samples"] == ["HTTP 500"]


def test_run_load_needs_a_stop_condition() -> None:
    with pytest.raises(ValueError):
        asyncio.run(run_load("http://bench.invalid", [Request("/x", b"{}")], 1))


def _point(c: int, rps: float, p99: float) -> dict:
    return {"concurrency": c, "throughput_rps": rps, "p99_ms": p99, "p50_ms": p99 / 2, "p95_ms": p99,
            "errors": 0, "requests": 10, "mean_batch": 1.0}


def _results(peer_rps: float) -> dict:
    swap_ops = {op: {"median_ms": 2.0, "max_ms": 3.0} for op in ("load", "swap", "remove")}
    run = {"sweep": [_point(1, 10.0, 100.0), _point(4, 40.0, 200.0)],
           "saturation": {"serving_vs_limit": 0.8}, "limit": {"robust_vs_standard": 0.95},
           "robust_cost": {"robust_vs_standard": 0.99, "mix_vs_standard": 0.95},
           "label_cache": {"classify_vs_embed": 0.96},
           "hot_swap": {"round_trip_idle": swap_ops, "server_side_under_load_ms": {"load": 0.1, "swap": None},
                        "failed_requests": 0}}
    peer = {"available": True, "sweep": [_point(1, 5.0, 400.0), _point(4, peer_rps, 400.0)]}
    return {"runs": {"float32": run}, "peer": peer}


def test_summary_ratios_and_targets() -> None:
    s = report.summarise(_results(peer_rps=20.0))["float32"]
    assert s["ratios"]["serving_vs_limit"] == pytest.approx(0.8)
    assert s["ratios"]["peer_throughput_ratio"] == pytest.approx(2.0)
    assert s["ratios"]["peer_p99_ratio"] == pytest.approx(0.5)
    assert s["targets"]["serving_vs_limit"]["met"] is False
    assert s["targets"]["mix_vs_standard"]["met"] is False and s["targets"]["robust_vs_standard"]["met"] is True
    # the ratio follows the peer's figure: a faster peer flips the target
    slower = report.summarise(_results(peer_rps=80.0))["float32"]
    assert slower["ratios"]["peer_throughput_ratio"] == pytest.approx(0.5)
    assert slower["targets"]["peer_throughput_ratio"]["met"] is False


def test_summary_without_peer() -> None:
    results = copy.deepcopy(_results(20.0))
    results["peer"] = {"available": False, "reason": "skipped"}
    s = report.summarise(results)["float32"]
    assert s["targets"]["peer_throughput_ratio"]["met"] is None and s["peer_by_concurrency"] == []


def test_server_process_reports_startup_failure(tmp_path) -> None:
    import sys

    from bench.server import ServerError

    srv = ServerProcess("false", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], "/health",
                        tmp_path / "log.txt", start_timeout_s=30)
    with pytest.raises(ServerError, match="boom"):
        srv.__enter__()
    assert os.getpid() in _tree(os.getppid())


def test_write_appends_the_analysis(tmp_path) -> None:
    results = {  # no per-dtype runs: the header, targets and peer sections only
        "runs": {}, "summary": {}, "peer": {"available": False, "reason": "not installed"},
        "meta": {"date_utc": "d", "cpu": "c", "cores": 2, "memory_gib": 1, "avx512_bf16": True,
                 "torch_threads": 2, "python": "3", "versions": {"torch": "x"}},
        "config": {"quick": False, "model": "m", "batch_size": 16, "max_wait_ms": 5, "images": 4,
                   "point_s": 1, "rounds": 1, "notes": []},
    }
    analysis = tmp_path / "ANALYSIS.md"
    analysis.write_text("## Analysis\n\nthe filter is slow\n")
    report.write(results, tmp_path / "RESULTS.md", tmp_path / "results.json", analysis)
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.startswith("# R-Adapt Serve benchmark results") and text.rstrip().endswith("the filter is slow")
    assert "Not measured: not installed" in text
