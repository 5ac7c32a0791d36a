"""``radapt bench --quick`` end to end: a real server subprocess on loopback, every section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench-quick")
    radapt = Path(sys.executable).parent / "radapt"
    proc = subprocess.run([str(radapt), "bench", "--quick", "--out", str(out)], capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), (out / "RESULTS.md").read_text()


def test_every_section_present(quick: tuple[dict, str]) -> None:
    results, md = quick
    assert set(results) >= {"meta", "config", "runs", "peer", "summary"}
    run = results["runs"]["float32"]
    assert set(run) >= {"sweep", "saturation", "limit", "robust_cost", "label_cache", "hot_swap", "memory",
                        "startup_s", "foreign_cores"}
    assert results["peer"]["available"] is False and "skipped" in results["peer"]["reason"]
    for heading in ("## Machine and setup", "## Targets", "## float32", "## Peer: infinity-emb"):
        assert heading in md
    assert results["meta"]["cores"] >= 1 and results["meta"]["versions"]["torch"] != "absent"


def test_sweep_is_sane(quick: tuple[dict, str]) -> None:
    sweep = quick[0]["runs"]["float32"]["sweep"]
    assert [p["concurrency"] for p in sweep] == [1, 4, 16]
    for p in sweep:
        assert p["errors"] == 0 and p["requests"] > 0 and p["throughput_rps"] > 0
        assert 0 < p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"]
    assert sweep[0]["mean_batch"] == pytest.approx(1.0)  # one client: nothing to batch with
    assert max(p["mean_batch"] for p in sweep) > 1.0  # concurrent clients share forwards


def test_comparisons_and_limit(quick: tuple[dict, str]) -> None:
    results = quick[0]
    run = results["runs"]["float32"]
    limit, sat = run["limit"], run["saturation"]
    assert limit["img_per_s"] > 0 and limit["robust_img_per_s"] > 0 and limit["batch_size"] == 16
    assert sat["errors"] == 0 and sat["throughput_rps"] > 0 and sat["concurrency"] == 16
    assert 0 < sat["forward_busy"] <= 1.05 and sat["server_cpu_ms_per_req"] > 0
    rc = run["robust_cost"]
    assert {m["errors"] for m in rc["modes"].values()} == {0}
    assert all(0 < rc[k] < 10 for k in ("robust_vs_standard", "mix_vs_standard"))
    assert 0 < run["label_cache"]["classify_vs_embed"] < 10
    ratios = results["summary"]["float32"]["ratios"]
    assert ratios["serving_vs_limit"] == pytest.approx(sat["throughput_rps"] / limit["img_per_s"], rel=1e-2, abs=1e-3)


def test_hot_swap_and_memory(quick: tuple[dict, str]) -> None:
    run = quick[0]["runs"]["float32"]
    swap, mem = run["hot_swap"], run["memory"]
    assert swap["failed_requests"] == 0 and swap["traffic"]["requests"] > 0
    for phase in ("round_trip_idle", "round_trip_under_load"):
        assert all(swap[phase][op]["median_ms"] > 0 for op in ("load", "swap", "remove"))
    assert all(v is not None and v >= 0 for v in swap["server_side_under_load_ms"].values())
    assert mem["rss_idle_bytes"] > 50 * 2**20 and mem["rss_peak_under_load_bytes"] > 50 * 2**20
    assert mem["adapters"] == 4 and mem["file_bytes"] > 0 and mem["anchor_elements"] > 0


def test_generation_section_end_to_end(tmp_path: Path) -> None:
    """`radapt bench --generation --quick`: every figure present and sane, the Markdown section written."""
    radapt = Path(sys.executable).parent / "radapt"
    proc = subprocess.run([str(radapt), "bench", "--generation", "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "generation.json").read_text())
    r = results["models"]["builtin:tiny-llava"]
    assert r["head_of_line"]["alone_ms"] > 0 and r["head_of_line"]["with_long_ms"] > 0
    for point in (r["one_client"], r["clients"]):
        assert point["errors"] == 0 and point["tokens"] > 0 and point["cpu_ms_per_token"] > 0
    assert r["clients"]["concurrency"] == 16 and all(v > 0 for v in r["modes_tokens_per_s"].values())
    assert set(results["targets"]["builtin:tiny-llava"]) == {"head_of_line", "scaling_16_vs_1",
                                                             "robust_vs_standard", "mix_vs_standard"}
    assert "## Generation (continuous batching)" in (tmp_path / "RESULTS.md").read_text()


def test_playground_section_end_to_end(tmp_path: Path) -> None:
    """`radapt bench --playground --quick`: classification alone and beside attacks, every figure present and
    sane, the Markdown section written."""
    radapt = Path(sys.executable).parent / "radapt"
    proc = subprocess.run([str(radapt), "bench", "--playground", "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "playground.json").read_text())
    for point in (*r["rounds"]["alone"], *r["rounds"]["under_attack"]):
        assert point["errors"] == 0 and point["requests"] > 0 and point["p99_ms"] > 0
    assert r["attacks"] >= 1 and r["attack_model_ms"] > 0 and r["step_model_ms"] > 0
    assert set(r["ratios"]) == {"throughput_under_attack_vs_alone", "p50_under_attack_vs_alone",
                                "p99_under_attack_vs_alone", "p99_vs_whole_attack"}
    assert all(v > 0 for v in r["ratios"].values())
    assert "## Playground attacks beside serving" in (tmp_path / "RESULTS.md").read_text()
