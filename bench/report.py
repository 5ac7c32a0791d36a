"""Ratios and targets from one run's raw figures; RESULTS.md and the JSON beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.generation import render as render_generation
from bench.playground import render as render_playground

MIB = 2**20


def _saturation(sweep: list[dict[str, Any]]) -> dict[str, Any]:
    return max(sweep, key=lambda p: p["throughput_rps"])


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 3)


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per dtype: the issue's ratios, each with its target and whether it was met."""
    out: dict[str, Any] = {}
    peer = results.get("peer", {})
    for dtype, run in results["runs"].items():
        sat = _saturation(run["sweep"])
        swap = run["hot_swap"]
        ratios: dict[str, Any] = {
            "serving_vs_limit": run["saturation"]["serving_vs_limit"],
            "limit_robust_vs_standard": run["limit"]["robust_vs_standard"],
            "robust_vs_standard": run["robust_cost"]["robust_vs_standard"],
            "mix_vs_standard": run["robust_cost"]["mix_vs_standard"],
            "classify_vs_embed": run["label_cache"]["classify_vs_embed"],
            "swap_round_trip_idle_ms": max(v["median_ms"] for v in swap["round_trip_idle"].values()),
            "swap_server_side_ms": max((v for v in swap["server_side_under_load_ms"].values() if v is not None),
                                       default=None),
            "swap_failed_requests": swap["failed_requests"],
        }
        per_c = []
        if peer.get("available"):
            theirs = {p["concurrency"]: p for p in peer["sweep"]}
            for p in run["sweep"]:
                q = theirs.get(p["concurrency"])
                if q:
                    per_c.append({"concurrency": p["concurrency"],
                                  "throughput_ratio": _ratio(p["throughput_rps"], q["throughput_rps"]),
                                  "p99_ratio": _ratio(p["p99_ms"], q["p99_ms"])})
            peer_sat = _saturation(peer["sweep"])
            ratios["peer_throughput_ratio"] = _ratio(sat["throughput_rps"], peer_sat["throughput_rps"])
            at_top = next((x for x in per_c if x["concurrency"] == max(x["concurrency"] for x in per_c)), None)
            ratios["peer_p99_ratio"] = at_top["p99_ratio"] if at_top else None
        targets = [
            ("serving_vs_limit", ">=", 0.90), ("robust_vs_standard", ">=", 0.97),
            ("mix_vs_standard", ">=", 0.97), ("classify_vs_embed", ">=", 0.95),
            ("swap_round_trip_idle_ms", "<=", 10.0), ("swap_failed_requests", "<=", 0),
            ("peer_throughput_ratio", ">=", 1.1), ("peer_p99_ratio", "<=", 0.8),
        ]
        checks = {}
        for key, op, bound in targets:
            v = ratios.get(key)
            checks[key] = {"value": v, "target": f"{op} {bound}",
                           "met": None if v is None else (v >= bound if op == ">=" else v <= bound)}
        out[dtype] = {"saturation": {"concurrency": sat["concurrency"], "throughput_rps": sat["throughput_rps"]},
                      "ratios": ratios, "targets": checks, "peer_by_concurrency": per_c}
    return out


def write(results: dict[str, Any], md_path: Path, json_path: Path, analysis: Path | None = None) -> None:
    """The JSON, and RESULTS.md with the hand-written ``analysis`` file (if any) appended."""
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = render(results)
    text += extra_sections(json_path.parent)
    if analysis is not None and analysis.exists():
        text += "\n" + analysis.read_text()
    md_path.write_text(text)


def extra_sections(folder: Path) -> str:
    """The sections of `radapt bench --generation` and `--playground`, from their JSON beside RESULTS.md."""
    text = ""
    for name, render_section in (("generation.json", render_generation), ("playground.json", render_playground)):
        path = folder / name
        if path.exists():
            text += "\n" + render_section(json.loads(path.read_text()))
    return text


def rewrite_results_md(section_json: Path) -> Path:
    """RESULTS.md beside a section's JSON: the CLIP run (when there is one) plus every section."""
    clip_json, md = section_json.with_name("results.json"), section_json.with_name("RESULTS.md")
    if clip_json.exists():
        analysis = clip_json.with_name("ANALYSIS.md")
        write(json.loads(clip_json.read_text()), md, clip_json, analysis if analysis.exists() else None)
    else:
        md.write_text("# R-Adapt Serve benchmark results\n" + extra_sections(md.parent))
    return md


def main() -> None:
    """``python -m bench.report [RESULTS_JSON]``: re-render RESULTS.md (e.g. after editing ANALYSIS.md)."""
    import sys

    here = Path(__file__).resolve().parent
    json_path = Path(sys.argv[1]) if len(sys.argv) > 1 else here / "results.json"
    results = json.loads(json_path.read_text())
    write(results, json_path.with_name("RESULTS.md"), json_path, here / "ANALYSIS.md")



def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def render(results: dict[str, Any]) -> str:
    meta, cfg, summary = results["meta"], results["config"], results["summary"]
    lines = [
        "# R-Adapt Serve benchmark results",
        "",
        f"Written by `radapt bench{' --quick' if cfg['quick'] else ''}` on {meta['date_utc']} UTC "
        f"(ended {meta.get('date_end_utc', '?')}). Every ratio compares figures taken in this same run.",
        "",
        "## Machine and setup",
        "",
        f"- CPU: {meta['cpu']}, {meta['cores']} cores, {meta['memory_gib']} GiB; AVX-512 BF16: "
        f"{_fmt(meta['avx512_bf16'])}; torch threads: {meta['torch_threads']}",
        f"- Python {meta['python']}; " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- Model `{cfg['model']}` on {cfg.get('device', 'cpu')}, server max batch {cfg['batch_size']}, "
        f"max wait {cfg['max_wait_ms']} ms, "
        f"{cfg['images']} distinct 224 px JPEG images as data URIs, one image per request, "
        f"{cfg['point_s']} s per load point, {cfg['rounds']} interleaved round(s) per comparison",
    ]
    for dtype, run in results["runs"].items():
        fc = run.get("foreign_cores", {})
        lines.append(f"- Other processes on the machine during the {dtype} run kept on average "
                     f"{fc.get('mean')} cores busy (max {fc.get('max')}) out of {meta['cores']}")
    lines += [f"- Note: {n}" for n in cfg.get("notes", [])]
    lines += ["", "## Targets", "", "| figure | dtype | value | target | met |", "|---|---|---|---|---|"]
    for dtype, s in summary.items():
        for key, t in s["targets"].items():
            lines.append(f"| {key} | {dtype} | {_fmt(t['value'])} | {t['target']} | {_fmt(t['met'])} |")
    for dtype, run in results["runs"].items():
        lines += _dtype_section(dtype, run, summary[dtype])
    lines += _peer_section(results.get("peer", {}), summary)
    return "\n".join(lines) + "\n"


def _dtype_section(dtype: str, run: dict[str, Any], s: dict[str, Any]) -> list[str]:
    rc, lc, sw, mem = run["robust_cost"], run["label_cache"], run["hot_swap"], run["memory"]
    limit, sat = run["limit"], run["saturation"]
    lines = [
        "", f"## {dtype}", "",
        f"Limit (in-process `get_image_features`, batch {limit['batch_size']}, no HTTP or decoding, "
        f"alternated with serving at c={sat['concurrency']} over {limit['seconds']} s): "
        f"**{_fmt(limit['img_per_s'])} img/s** standard, {_fmt(limit['robust_img_per_s'])} img/s all-robust "
        f"(robust/standard in-process {_fmt(limit['robust_vs_standard'])}); image preprocessing alone "
        f"{_fmt(limit['preprocess_img_per_s'])} img/s on one thread. Serving in the same windows: "
        f"{_fmt(sat['throughput_rps'])} img/s (mean batch {_fmt(sat['mean_batch'])}) = "
        f"**{_fmt(sat['serving_vs_limit'])}x** the limit (per round: "
        f"{', '.join(_fmt(x) for x in sat['serving_vs_limit_per_round'])}). "
        f"CPU per image: limit {_fmt(limit['cpu_ms_per_img'])} ms, "
        f"server {_fmt(sat['server_cpu_ms_per_req'])} ms, load generator {_fmt(sat['client_cpu_ms_per_req'])} ms "
        f"(client and server share the cores); the model thread was in a forward "
        f"{_fmt(sat.get('forward_busy'))} of the time. Server start to ready: {run['startup_s']} s.",
        "", "| concurrency | req/s | p50 ms | p95 ms | p99 ms | mean batch | server CPU ms/req | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in run["sweep"]:
        lines.append(f"| {p['concurrency']} | {_fmt(p['throughput_rps'])} | {_fmt(p['p50_ms'])} | "
                     f"{_fmt(p['p95_ms'])} | {_fmt(p['p99_ms'])} | {_fmt(p['mean_batch'])} | "
                     f"{_fmt(p['server_cpu_ms_per_req'])} | {p['errors']} |")
    m = rc["modes"]
    lines += [
        "", f"Robust mode at c={rc['concurrency']}: standard {_fmt(m['standard']['throughput_rps'])}, "
        f"all-robust {_fmt(m['robust']['throughput_rps'])}, 50/50 mix {_fmt(m['mix']['throughput_rps'])} req/s "
        f"(mean batch {_fmt(m['standard']['mean_batch'])} / {_fmt(m['robust']['mean_batch'])} / "
        f"{_fmt(m['mix']['mean_batch'])}): robust/standard **{_fmt(rc['robust_vs_standard'])}**, "
        f"mix/standard **{_fmt(rc['mix_vs_standard'])}**. Per round (req/s): "
        + "; ".join(f"{k} {', '.join(_fmt(x) for x in v['throughput_rps_per_round'])}" for k, v in m.items()) + ".",
        "", f"Label cache at c={lc['concurrency']}: classification over {lc['labels']} repeated labels "
        f"{_fmt(lc['modes']['classify']['throughput_rps'])} req/s vs image embedding "
        f"{_fmt(lc['modes']['embed']['throughput_rps'])} req/s = **{_fmt(lc['classify_vs_embed'])}**.",
        "", f"Hot-swap ({sw['cycles']} load/swap/remove cycles; adapter file {sw['adapter_file_bytes']} bytes): "
        "HTTP round trip, median (max) ms:", "",
        "| op | idle | under traffic (c=" + str(sw["concurrency"]) + ") | server-side under traffic |",
        "|---|---|---|---|",
    ]
    for op in ("load", "swap", "remove"):
        idle, busy = sw["round_trip_idle"][op], sw["round_trip_under_load"][op]
        lines.append(f"| {op} | {_fmt(idle['median_ms'])} ({_fmt(idle['max_ms'])}) | {_fmt(busy['median_ms'])} "
                     f"({_fmt(busy['max_ms'])}) | {_fmt(sw['server_side_under_load_ms'][op])} |")
    d, o = sw["in_flight_during_swaps"], sw["outside_swaps"]
    lines += [
        "", f"Traffic during the swaps: {sw['traffic']['requests']} requests, **{sw['failed_requests']} failed**; "
        f"requests in flight while an adapter operation ran: {d['requests']} (p50 {_fmt(d['p50_ms'])} ms, max "
        f"{_fmt(d['max_ms'])} ms) vs the others: {o['requests']} (p50 {_fmt(o['p50_ms'])} ms, max "
        f"{_fmt(o['max_ms'])} ms).",
        "", f"Memory (server process tree, VmRSS): idle {_fmt(mem['rss_idle_bytes'] / MIB)} MiB, peak under load "
        f"{_fmt(mem['rss_peak_under_load_bytes'] / MIB)} MiB; {mem['adapters']} extra adapters added "
        f"{_fmt(mem['rss_bytes_per_adapter'] / 1024)} KiB of RSS each (file {mem['file_bytes']} bytes; anchor "
        f"{mem['anchor_shape']} = {mem['anchor_elements'] * _itemsize(dtype)} bytes in {dtype}).",
    ]
    return lines


def _itemsize(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def _peer_section(peer: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    lines = ["", "## Peer: infinity-emb", ""]
    if not peer.get("available"):
        return lines + [f"Not measured: {peer.get('reason', 'unknown')}"]
    lines += [f"Versions: {', '.join(f'{k} {v}' for k, v in peer['versions'].items())}. Same checkpoint "
              f"(`radapt models export`), same images, same concurrencies, same max batch; start to ready "
              f"{peer['startup_s']} s; RSS idle {_fmt(peer['rss_idle_bytes'] / MIB)} MiB.",
              f"Dtype: {peer['dtype']}. {peer['dtype_note']}", "",
              "| concurrency | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|"]
    for p in peer["sweep"]:
        lines.append(f"| {p['concurrency']} | {_fmt(p['throughput_rps'])} | {_fmt(p['p50_ms'])} | "
                     f"{_fmt(p['p99_ms'])} | {p['errors']} |")
    lines += ["", "Ours / peer, per concurrency (throughput target >= 1.1, p99 target <= 0.8):", "",
              "| dtype (ours) | concurrency | throughput ratio | p99 ratio |", "|---|---|---|---|"]
    for dtype, s in summary.items():
        for x in s["peer_by_concurrency"]:
            lines.append(f"| {dtype} | {x['concurrency']} | {_fmt(x['throughput_ratio'])} | {_fmt(x['p99_ratio'])} |")
    return lines


if __name__ == "__main__":
    main()
