"""Evaluation reports: JSON (every number, settings, versions), a Markdown table, PNG plots."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.lab.evaluate import ConfigResult
from adapters.lab.lvlm_eval import LvlmResult

METRICS = {"classify": "zero-shot accuracy (%)", "caption": "CIDEr (x100)", "vqa": "VQA accuracy (%)"}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("radapt-serve", "torch", "transformers", "pyautoattack"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def to_json(results: Sequence[ConfigResult | LvlmResult], settings: dict[str, Any]) -> dict[str, Any]:
    return {"settings": settings, "versions": versions(), "configurations": [_result_json(r) for r in results]}


def _result_json(r: ConfigResult | LvlmResult) -> dict[str, Any]:
    out = {**r.config.describe(), "n": r.n, "seconds": r.seconds, "clean": r.clean,
           "robust": {f"{e:g}": v for e, v in r.robust.items()}}
    if isinstance(r, LvlmResult):
        return out | {"clean_loss": r.clean_loss,
                      "attacked_loss": {f"{e:g}": v for e, v in r.attacked_loss.items()}}
    return out | {"after_attack": {f"{e:g}": v for e, v in r.after_attack.items()}}


def markdown_table(results: Sequence[ConfigResult | LvlmResult], attacks: Sequence[str],
                   task: str = "classify") -> str:
    """Scores x100 per configuration: clean, then worst case over ``attacks`` per eps (and, for the
    LVLM tasks, the mean reference loss clean and attacked)."""
    eps = list(results[0].robust) if results else []
    lvlm = task != "classify"
    head = ["configuration", "clean"] + [f"eps {e:g}/255" for e in eps]
    if lvlm:
        head += ["loss clean"] + [f"loss {e:g}/255" for e in eps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.config.name, f"{100 * r.clean:.1f}"] + [f"{100 * r.robust[e]:.1f}" for e in eps]
        if isinstance(r, LvlmResult):
            cells += [f"{r.clean_loss:.3f}"] + [f"{r.attacked_loss[e]:.3f}" for e in eps]
        lines.append("| " + " | ".join(cells) + " |")
    n = results[0].n if results else 0
    lines.append("")
    if lvlm:
        lines.append(f"{METRICS[task]} on {n} images; robust = worst case per image over {', '.join(attacks)} "
                     "(L-inf, on the teacher-forced loss of the references); loss = mean reference loss "
                     "(nats/token), attacked = highest over the attacks.")
    else:
        lines.append(f"Zero-shot top-1 accuracy (%) on {n} images; robust = worst case per sample over "
                     f"{', '.join(attacks)} (L-inf).")
    return "\n".join(lines) + "\n"


def plot_accuracy(results: Sequence[ConfigResult | LvlmResult], path: Path, title: str,
                  task: str = "classify") -> Path:
    """Score (x100) vs eps (eps 0 = clean), one line per configuration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in results:
        xs = [0.0] + list(r.robust)
        ys = [100 * r.clean] + [100 * v for v in r.robust.values()]
        ax.plot(xs, ys, marker="o", label=r.config.name)
    ax.set_xlabel("eps (1/255, L-inf)")
    ax.set_ylabel(METRICS[task])
    if task != "caption":  # CIDEr has no upper bound
        ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_tradeoff(results: Sequence[ConfigResult], path: Path, title: str) -> Path:
    """Clean vs robust accuracy at the largest eps, one labelled point per configuration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    eps = max(results[0].robust)
    for r in results:
        ax.scatter(100 * r.robust[eps], 100 * r.clean)
        ax.annotate(r.config.name, (100 * r.robust[eps], 100 * r.clean), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"robust accuracy at eps {eps:g}/255 (%)")
    ax.set_ylabel("clean accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def write_reports(results: Sequence[ConfigResult], settings: dict[str, Any], out: Path,
                  sweep: Sequence[ConfigResult] = ()) -> dict[str, Path]:
    """Write results.json, results.md, accuracy.png (and tradeoff.png with a sweep) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    attacks = settings.get("attacks", [])
    everything = list(results) + list(sweep)
    files = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / "accuracy.png"}
    files["json"].write_text(json.dumps(to_json(everything, settings), indent=2) + "\n")
    files["markdown"].write_text(markdown_table(everything, attacks))
    plot_accuracy(results, files["plot"], f"{settings.get('model', '')}: accuracy vs eps")
    if sweep:
        files["tradeoff"] = plot_tradeoff(everything, out / "tradeoff.png",
                                          f"{settings.get('model', '')}: clean/robust trade-off")
    return files


def write_lvlm_reports(results: Sequence[LvlmResult], settings: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write results.json, predictions.json, results.md and score.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    task = settings["task"]
    files = {"json": out / "results.json", "predictions": out / "predictions.json",
             "markdown": out / "results.md", "plot": out / "score.png"}
    files["json"].write_text(json.dumps(to_json(results, settings), indent=2) + "\n")
    predictions = {r.config.name: r.predictions for r in results}
    files["predictions"].write_text(json.dumps(predictions, indent=2) + "\n")
    files["markdown"].write_text(markdown_table(results, settings.get("attacks", []), task))
    plot_accuracy(results, files["plot"], f"{settings.get('model', '')}: {task} vs eps", task)
    return files


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path
