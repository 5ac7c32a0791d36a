"""The playground: one page (``/playground``, off unless ``--playground``) that shows standard and
robust predictions side by side and attacks an image on the server.

The page is static HTML/CSS/JS in ``static/`` (nothing from another host; the route sends a CSP
that forbids it). It classifies through the public ``POST /v1/classify`` and attacks through
``POST /playground/api/attack``, which this module composes from engine calls: ``Engine.attack``
(PGD against one mode, each step queued behind serving work) and four ``Engine.classify``
calls (both modes, clean and attacked). Attacks are bounded by the settings (``attack_max_eps``,
``attack_max_steps``), one per model at a time, and rate-limited per client address here.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from service.adapters_manager import DEFAULT
from service.engine.engine import AttackOutcome, Engine
from service.engine.tasks import ImageInput, TaskResult
from service.errors import NotReady, Overloaded
from service.settings import DEFAULT_TEMPLATE, Settings

STATIC = Path(__file__).with_name("static")
FASHION_PREFIX = "builtin:fashion-clip"
# Fashion-MNIST test images (indices into the committed test slice) where a 10-step PGD at eps 8/255
# against standard mode changes builtin:fashion-clip's answer while robust mode keeps the right one:
# one per class that has such an image among the first 300 (Shirt has none). Chosen by
# scripts/playground_samples.py, which also prints how often that happens overall.
SAMPLE_INDICES = (9, 13, 14, 19, 28, 31, 65, 72, 114)
GENERIC_LABELS = ("cat", "dog", "car", "airplane", "bird")
DEFAULT_EPS, DEFAULT_STEPS = 8, 10
BURST = 3  # attacks a client may start back to back before the per-minute rate applies


@dataclass(frozen=True)
class Sample:
    id: str
    label: str
    image: str  # PNG data URI


@lru_cache(maxsize=1)
def fashion_samples() -> tuple[Sample, ...]:
    from adapters.zoo.fashion_data import CLASSES, TEST_SLICE

    data = np.load(TEST_SLICE)
    return tuple(Sample(f"fashion-mnist-test-{i}", CLASSES[int(data["labels"][i])], png_data_uri(data["images"][i]))
                 for i in SAMPLE_INDICES)


def png_data_uri(pixels: np.ndarray) -> str:
    """``[H, W]`` or ``[H, W, 3]`` uint8 -> an RGB PNG data URI."""
    buf = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def perturbation_image(outcome: AttackOutcome) -> tuple[np.ndarray, float]:
    """The perturbation magnified to the full range around mid grey, and the factor."""
    delta = outcome.attacked.astype(np.float32) - outcome.original.astype(np.float32)
    gain = 127.0 / outcome.eps
    return np.clip(128.0 + delta * gain, 0, 255).round().astype(np.uint8), gain


class RateLimiter:
    """A token bucket per client address (``per_minute`` tokens a minute, ``burst`` at most),
    remembering the ``capacity`` most recent addresses."""

    def __init__(self, per_minute: float, burst: int = BURST, capacity: int = 4096) -> None:
        self.rate, self.burst, self.capacity = per_minute / 60.0, float(burst), capacity
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str, now: float | None = None) -> float:
        """0 when ``key`` may go now (a token is taken), else the seconds until it may."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens - 1.0 if wait == 0.0 else tokens, now)
        while len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)
        return wait


class Playground:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.limiter = RateLimiter(settings.attacks_per_minute)

    def config(self) -> dict[str, Any]:
        """What the page needs: models that classify, their adapters, defaults, limits, samples
        (503 while the models are still loading: the page retries)."""
        if not self.engine.ready:
            raise NotReady("models are still loading; retry shortly", headers={"Retry-After": "2"})
        s, models = self.settings, [m for m in self.engine.models.values() if "classify" in m.tasks]
        fashion = next((m.name for m in models if m.name.startswith(FASHION_PREFIX)), None)
        samples = [vars(x) | {"model": fashion} for x in fashion_samples()] if fashion else []
        labels = list(GENERIC_LABELS)
        if fashion:
            from adapters.zoo.fashion_data import CLASSES

            labels = list(CLASSES)
        return {
            "models": [{"id": m.name, "adapters": [a.name for a in m.adapters.infos()]} for m in models],
            "default_model": fashion or (models[0].name if models else None),
            "labels": labels, "template": DEFAULT_TEMPLATE, "samples": samples,
            "needs_api_key": s.api_key is not None,
            "attack": {"max_eps": s.attack_max_eps, "default_eps": min(DEFAULT_EPS, s.attack_max_eps),
                       "max_steps": s.attack_max_steps, "default_steps": min(DEFAULT_STEPS, s.attack_max_steps),
                       "needs_admin_key": (s.admin_key or s.api_key) is not None,
                       "per_minute": s.attacks_per_minute},
        }

    def admit(self, client: str) -> None:
        """429 ``rate_limited`` when ``client`` has used its attacks for now."""
        wait = self.limiter.take(client)
        if wait > 0:
            raise Overloaded(f"attack rate limit: {self.settings.attacks_per_minute:g} a minute per client; "
                             f"retry in {wait:.0f} s", "rate_limited",
                             headers={"Retry-After": f"{max(1, round(wait))}"})

    async def attack(self, image: ImageInput, labels: list[str], eps: int, steps: int, template: str | None,
                     model: str | None, adapter: str | None, target: str) -> dict[str, Any]:
        """Attack one mode, then classify the clean and the attacked image in both modes."""
        engine = self.engine
        robust_adapter = adapter or DEFAULT
        on_robust = target == "robust"
        crafted = await engine.attack(image=image, labels=labels, eps=eps, steps=steps, template=template,
                                      robust=on_robust, adapter=robust_adapter if on_robust else None, model=model)
        outcome: AttackOutcome = crafted.value
        clean, attacked = Image.fromarray(outcome.original), Image.fromarray(outcome.attacked)

        def classify(img: Image.Image, robust: bool) -> Any:
            return engine.classify(image=img, labels=labels, template=template, robust=robust,
                                   adapter=robust_adapter if robust else None, model=crafted.model)

        runs: list[TaskResult] = await asyncio.gather(classify(clean, False), classify(attacked, False),
                                                      classify(clean, True), classify(attacked, True))
        noise, gain = perturbation_image(outcome)
        linf = int(np.abs(outcome.attacked.astype(np.int16) - outcome.original.astype(np.int16)).max())
        return {
            "model": crafted.model, "target": target, "eps": eps, "steps": steps, "label": outcome.label,
            "linf": linf, "attack_adapter": crafted.adapter, "attack_adapter_id": crafted.adapter_id,
            "images": {"original": png_data_uri(outcome.original), "attacked": png_data_uri(outcome.attacked),
                       "perturbation": png_data_uri(noise), "magnification": round(gain, 2),
                       "size": list(outcome.original.shape[:2])},
            "standard": {"adapter": None, "adapter_id": None, "clean": _scores(runs[0]), "attacked": _scores(runs[1])},
            "robust": {"adapter": runs[2].adapter, "adapter_id": runs[2].adapter_id, "clean": _scores(runs[2]),
                       "attacked": _scores(runs[3])},
            "timings": {"attack_s": round(crafted.queue_time + crafted.inference_time, 4),
                        "attack_model_s": round(crafted.inference_time, 4)},
        }


def _scores(result: TaskResult) -> list[dict[str, Any]]:
    return [{"label": label, "score": score} for label, score in result.value]
