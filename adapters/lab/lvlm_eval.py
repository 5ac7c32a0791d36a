"""Clean and robust captioning (CIDEr) and VQA accuracy of LLaVA / Qwen-VL, per R-Adapt configuration.

For each configuration (standard mode or an adapter), each image and each eps: attack the
teacher-forced loss of the image's references (``adapters.lab.lvlm_attacks``), generate greedily from
the adversarial image, score. With several attacks the worst case per image is kept (the lowest
score, as RobustVLM does), and the attacked loss reported is the highest reached.

Datasets (``read_dataset``): ``DIR/captions.json`` = ``[{"image": "a.png", "captions": [...]}, ...]``
and ``DIR/vqa.json`` = ``[{"image": "a.png", "question": "...", "answers": [...]}, ...]``,
image paths relative to ``DIR``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from adapters.lab.captioning_metrics import CiderD, normalize_answer, vqa_accuracy
from adapters.lab.evaluate import EvalConfig
from adapters.lab.lvlm_attacks import LVLM_ATTACKS, Example, LvlmTarget, attack_example
from adapters.method.anchor import Adapter

TASKS = ("caption", "vqa")
DATA_FILES = {"caption": "captions.json", "vqa": "vqa.json"}
CAPTION_PROMPT = "Provide a short caption for this image."
VQA_PROMPT = "{question}\nAnswer the question using a single word or phrase."  # LLaVA-1.5's VQAv2 prompt
MAX_NEW_TOKENS = {"caption": 20, "vqa": 5}


@dataclass(frozen=True)
class Item:
    """One image: its path, the question (VQA) and the references (captions or human answers)."""

    image: Path
    references: tuple[str, ...]
    question: str | None = None


@dataclass
class LvlmResult:
    """Scores of one configuration: ``clean`` and ``robust[eps]`` (CIDEr or VQA accuracy, in [0, ...]).

    ``clean_loss`` / ``attacked_loss[eps]``: mean teacher-forced loss of the references (nats per
    token); ``predictions``: the generated texts, keyed ``"clean"`` and ``f"{eps:g}"``.
    """

    config: EvalConfig
    n: int
    clean: float
    robust: dict[float, float] = field(default_factory=dict)
    clean_loss: float = 0.0
    attacked_loss: dict[float, float] = field(default_factory=dict)
    predictions: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0


def read_dataset(folder: str | Path, task: str) -> list[Item]:
    """Items of ``folder/captions.json`` (caption) or ``folder/vqa.json`` (vqa), checked."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    root = Path(folder)
    path = root / DATA_FILES[task]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --task {task} reads DIR/{DATA_FILES[task]}")
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty JSON list")
    key = "captions" if task == "caption" else "answers"
    items = []
    for i, row in enumerate(rows):
        refs = row.get(key) if isinstance(row, dict) else None
        ok = (isinstance(row, dict) and isinstance(row.get("image"), str) and isinstance(refs, list) and refs
              and all(isinstance(r, str) and r.strip() for r in refs)
              and (task == "caption" or isinstance(row.get("question"), str) and row["question"].strip()))
        if not ok:
            need = '"image", "captions"' if task == "caption" else '"image", "question", "answers"'
            raise ValueError(f"{path}: entry {i} needs {need} (non-empty strings / lists of strings)")
        image = root / row["image"]
        if not image.is_file():
            raise FileNotFoundError(f"{path}: entry {i}: image {str(image)!r} does not exist")
        items.append(Item(image, tuple(refs), row.get("question") if task == "vqa" else None))
    return items


def attack_references(item: Item, task: str, max_refs: int) -> list[str]:
    """The texts whose loss the attack raises: the first ``max_refs`` captions, or the most frequent
    distinct (normalised) human answers."""
    if task == "caption":
        return list(item.references[:max_refs])
    counts = Counter(normalize_answer(a) or a.strip() for a in item.references)
    return [a for a, _ in counts.most_common(max_refs)]


def evaluate_lvlm(target: LvlmTarget, items: Sequence[Item], task: str, configs: Sequence[EvalConfig],
                  eps: Sequence[float], attacks: Sequence[str], steps: int = 100, seed: int = 0,
                  max_new_tokens: int | None = None, prompt: str | None = None, max_refs: int = 5,
                  progress: bool = True) -> list[LvlmResult]:
    """Evaluate each configuration on ``items``; ``eps`` in 1/255, ``attacks`` from ``LVLM_ATTACKS``."""
    bad = [a for a in attacks if a not in LVLM_ATTACKS]
    if bad or not attacks:
        raise ValueError(f"attacks must be among {', '.join(LVLM_ATTACKS)}; got {list(attacks)}")
    if not items:
        raise ValueError("no items to evaluate")
    new_tokens = max_new_tokens or MAX_NEW_TOKENS[task]
    examples = [_example(target, it, task, prompt, max_refs) for it in items]
    score = _scorer(items, task)
    results = []
    with tqdm(total=len(configs) * len(items), desc=f"eval {task}", disable=not progress) as bar:
        for config in configs:
            started = time.perf_counter()
            adapter = None if config.adapter is None else config.adapter.to(target.device)
            res = LvlmResult(config, len(items), 0.0, predictions={"clean": []})
            clean_scores, clean_losses = [], []
            worst: dict[float, list[tuple[float, float, str]]] = {e: [] for e in eps}  # score, loss, text
            for i, ex in enumerate(examples):
                text = target.generate(ex.image, ex, adapter, new_tokens)
                res.predictions["clean"].append(text)
                clean_scores.append(score(i, text))
                clean_losses.append(float(target.loss(ex.image, ex, adapter).detach()))
                for e in eps:
                    worst[e].append(_worst_case(target, ex, adapter, e, attacks, steps, seed + i, new_tokens,
                                                lambda t, i=i: score(i, t)))
                bar.set_postfix(config=config.name[:24], clean=f"{_mean(clean_scores):.3f}")
                bar.update(1)
            res.clean, res.clean_loss = _mean(clean_scores), _mean(clean_losses)
            for e in eps:
                res.robust[e] = _mean([s for s, _, _ in worst[e]])
                res.attacked_loss[e] = _mean([lo for _, lo, _ in worst[e]])
                res.predictions[f"{e:g}"] = [t for _, _, t in worst[e]]
            res.seconds = round(time.perf_counter() - started, 3)
            results.append(res)
    return results


def _example(target: LvlmTarget, item: Item, task: str, prompt: str | None, max_refs: int) -> Example:
    with Image.open(item.image) as img:
        image = img.convert("RGB")
    if task == "caption":
        text = prompt or CAPTION_PROMPT
    else:
        text = (prompt or VQA_PROMPT).replace("{question}", item.question or "")
    return target.example(image, text, attack_references(item, task, max_refs))


def _scorer(items: Sequence[Item], task: str) -> Callable[[int, str], float]:
    if task == "caption":
        return CiderD([it.references for it in items]).score
    return lambda i, text: vqa_accuracy(text, items[i].references)


def _worst_case(target: LvlmTarget, ex: Example, adapter: Adapter | None, eps: float, attacks: Sequence[str],
                steps: int, seed: int, new_tokens: int, score: Callable[[str], float]) -> tuple[float, float, str]:
    """(lowest score, highest attacked loss, the text of the lowest score) over ``attacks``."""
    best: tuple[float, float, str] | None = None
    top_loss = float("-inf")
    for name in attacks:
        x_adv = attack_example(target, ex, adapter, eps, name, steps, seed) if eps > 0 else ex.image
        loss = float(target.loss(x_adv, ex, adapter).detach())
        text = target.generate(x_adv, ex, adapter, new_tokens)
        s = score(text)
        top_loss = max(top_loss, loss)
        if best is None or s < best[0]:
            best = (s, loss, text)
    assert best is not None
    return best[0], top_loss, best[2]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / max(len(values), 1)
