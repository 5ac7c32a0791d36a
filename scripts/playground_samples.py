"""How the playground's sample images were chosen, and how often its effect shows.

For the first N images of the committed Fashion-MNIST test slice: a PGD attack at the playground's
defaults (eps 8/255, 10 steps) against builtin:fashion-clip's standard mode, through the engine as
the page runs it; then both modes on the clean and the attacked image. Prints clean and attacked
accuracy of both modes and, per class, the images where standard mode is fooled while robust mode
keeps the right label (the samples are the first such image of each class).

    .venv/bin/python scripts/playground_samples.py [--n 300] [--eps 8] [--steps 10] [--target standard]
"""

from __future__ import annotations

import argparse
import asyncio
import io

import numpy as np
from PIL import Image

from adapters.zoo.fashion_data import CLASSES, TEST_SLICE
from service.engine.engine import Engine
from service.settings import load_settings


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


async def main(n: int, eps: int, steps: int, target: str) -> None:
    data = np.load(TEST_SLICE)
    labels = list(CLASSES)
    settings = load_settings(models=["builtin:fashion-clip"], device="cpu", dtype="float32", attack_max_eps=64,
                             attack_max_steps=200)
    counts = {k: 0 for k in ("standard clean", "robust clean", "standard attacked", "robust attacked")}
    shown: dict[str, list[int]] = {c: [] for c in CLASSES}
    async with Engine(settings) as engine:
        async def top(image: bytes, robust: bool) -> str:
            return (await engine.classify(image, labels, robust=robust)).value[0][0]

        for i in range(n):
            truth, clean = CLASSES[int(data["labels"][i])], png(data["images"][i])
            attacked = png((await engine.attack(clean, labels, eps, steps, robust=target == "robust")).value.attacked)
            right = {"standard clean": await top(clean, False) == truth,
                     "robust clean": await top(clean, True) == truth,
                     "standard attacked": await top(attacked, False) == truth,
                     "robust attacked": await top(attacked, True) == truth}
            for k, ok in right.items():
                counts[k] += ok
            if right["standard clean"] and right["robust clean"] and not right["standard attacked"] \
                    and right["robust attacked"]:
                shown[truth].append(i)
    print(f"{n} test images, PGD-{steps} at eps {eps}/255 against {target} mode:")
    for k, v in counts.items():
        print(f"  {k:18s} {v / n:6.1%}")
    print("standard fooled while robust holds, per class:")
    for c, idx in shown.items():
        print(f"  {c:12s} {len(idx):3d}  first: {idx[:5]}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--eps", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--target", choices=["standard", "robust"], default="standard")
    args = ap.parse_args()
    asyncio.run(main(args.n, args.eps, args.steps, args.target))
