"""Option parsing shared by both tasks of ``radapt eval`` (``eval`` classify, ``eval_lvlm`` caption/VQA)."""

from __future__ import annotations

from pathlib import Path


class UsageError(ValueError):
    """A bad option value; the message says which and why."""


def parse_floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma separated numbers, got {text!r}") from None
    if not values:
        raise UsageError(f"{what} is empty")
    return values


def parse_attacks(text: str, task: str = "classify") -> list[str]:
    from adapters.lab.attacks import ATTACKS
    from adapters.lab.lvlm_attacks import LVLM_ATTACKS

    allowed = ATTACKS if task == "classify" else LVLM_ATTACKS
    names = [a.strip().lower() for a in text.split(",") if a.strip()]
    bad = [a for a in names if a not in allowed]
    if bad or not names:
        raise UsageError(f"--attack takes {', '.join(allowed)} with --task {task}; got {text!r}")
    return list(dict.fromkeys(names))


def parse_sweep(items: list[str] | None) -> dict[str, list[float]] | None:
    """``["sigma=0.5,1", "alpha=0.25"]`` -> ``{"sigma": [...], "alpha": [...]}``; missing keys default."""
    if not items:
        return None
    from adapters.method.config import DEFAULT_ALPHA, DEFAULT_SIGMA

    grid = {"sigma": [DEFAULT_SIGMA], "alpha": [DEFAULT_ALPHA]}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or key not in grid:
            raise UsageError(f"--sweep takes sigma=V1,V2,... and alpha=V1,V2,...; got {item!r}")
        grid[key] = parse_floats(values, f"--sweep {key}")
    return grid


def check_extras(attacks: list[str]) -> None:
    """The optional packages this run needs, named with the install command if missing."""
    import importlib.util

    needed = ["matplotlib"] + (["pyautoattack"] if any(a.startswith("apgd") for a in attacks) else [])
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"radapt eval needs {', '.join(missing)}: pip install 'radapt-serve[eval]'")


def read_templates(path: str | None) -> tuple[str, ...]:
    from adapters.lab.zeroshot import TEMPLATES

    if path is None:
        return TEMPLATES
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines or any("{}" not in ln for ln in lines):
        raise UsageError(f"{path}: every template line needs {{}} for the class name")
    return tuple(lines)
