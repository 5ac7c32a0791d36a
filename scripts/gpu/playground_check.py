"""GPU check of issue 13 (playground attacks), one JSON line per configuration; about a minute.

    PYTHONPATH=. python scripts/gpu/playground_check.py

For builtin:fashion-clip on the CPU (float32, the reference) and on CUDA (float32, bfloat16,
float16), through the same composition the page calls (``Playground.attack``): each of the eight
sample images attacked at the page's defaults (eps 8/255, 10 PGD steps, against standard mode),
how many fool standard mode and how many robust mode survives, how many attacked images equal the
CPU's pixel for pixel, and the model time per attack step; one adaptive attack (through R-Adapt's
filter) per configuration. Then builtin:clip-vit-b32-random (ViT-B/32 at 224 px) for the time of
one attack step at a real CLIP size, CPU vs CUDA in the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from adapters.zoo.fashion_data import CLASSES  # noqa: E402
from service.engine.engine import Engine  # noqa: E402
from service.playground import Playground, fashion_samples  # noqa: E402
from service.settings import load_settings  # noqa: E402


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def fashion(device: str, dtype: str, reference: dict[str, str] | None) -> dict[str, str]:
    settings = load_settings(models=["builtin:fashion-clip"], device=device, dtype=dtype, playground=True)
    images: dict[str, str] = {}
    async with Engine(settings) as engine:
        pg = Playground(settings, engine)
        fooled = held = 0
        step_s: list[float] = []
        for s in fashion_samples():
            r = await pg.attack(s.image, list(CLASSES), 8, 10, None, None, None, "standard")
            fooled += r["standard"]["attacked"][0]["label"] != s.label
            held += r["robust"]["attacked"][0]["label"] == s.label
            images[s.id] = r["images"]["attacked"]
            step_s.append(r["timings"]["attack_model_s"] / 10)
        adaptive = await pg.attack(fashion_samples()[0].image, list(CLASSES), 8, 10, None, None, None, "robust")
        same = None if reference is None else sum(images[k] == reference[k] for k in images)
        emit(check="fashion-clip", device=device, dtype=dtype, samples=len(images), standard_fooled=fooled,
             robust_held=held, attacked_equal_to_cpu=same, step_ms_median=round(1000 * float(np.median(step_s)), 3),
             adaptive_robust_top=adaptive["robust"]["attacked"][0]["label"],
             gpu=torch.cuda.get_device_name() if device == "cuda" else None)
    return images


async def vitb32(device: str, dtype: str, steps: int) -> None:
    settings = load_settings(models=["builtin:clip-vit-b32-random"], device=device, dtype=dtype,
                             attack_max_steps=steps)
    rng = np.random.default_rng(0)
    from PIL import Image

    img = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    async with Engine(settings) as engine:
        await engine.attack(img, list(CLASSES), 8, 2)  # warm
        start = time.perf_counter()
        r = await engine.attack(img, list(CLASSES), 8, steps)
        wall = time.perf_counter() - start
        emit(check="vit-b32-step", device=device, dtype=dtype, steps=steps,
             step_ms=round(1000 * r.inference_time / steps, 2), wall_ms_per_step=round(1000 * wall / steps, 2),
             linf=int(np.abs(r.value.attacked.astype(int) - r.value.original).max()))


async def main() -> None:
    reference = await fashion("cpu", "float32", None)
    for dtype in ("float32", "bfloat16", "float16"):
        await fashion("cuda", dtype, reference)
    await vitb32("cpu", "float32", 3)
    for dtype in ("float32", "bfloat16"):
        await vitb32("cuda", dtype, 20)


if __name__ == "__main__":
    asyncio.run(main())
