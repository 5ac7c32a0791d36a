"""GPU checks of issue 9 (hardening), one JSON line per check; under a minute on one H100.

    .venv/bin/python scripts/gpu/hardening.py

1. ``--dtype auto`` on this GPU (bfloat16 where CUDA computes it natively).
2. The folded CLIP blur on CUDA: peak extra memory and time of folding ViT-B/32's patch weights at
   sigma 1, 3 and 8 (the unfolded 2-D version needed 1.6 / 16.6 / >100 GB), and that the folded conv
   equals blur-then-conv.
3. The weight digest of builtin:clip-vit-b32-random loaded in float32, bfloat16 and float16 on CUDA:
   the same checkpoint must match across dtypes (difference under the tolerance), another init not.
4. A robust classify batch with sigma 3 through the engine on CUDA in the auto dtype (no 5xx path).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def check_dtype() -> None:
    from adapters.zoo.loading import resolve_dtype

    dev = torch.device("cuda")
    emit(check="dtype_auto", gpu=torch.cuda.get_device_name(0), bf16_supported=torch.cuda.is_bf16_supported(),
         auto=str(resolve_dtype("auto", dev)).removeprefix("torch."))


def check_fold() -> None:
    from adapters.method.lowpass import blurred_patch_conv, fold_blur_into_weight, gaussian_blur, kernel_radius

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 768, 32, 32, bias=False).to("cuda")
    x = torch.randn(4, 3, 224, 224, device="cuda")
    for sigma in (1.0, 3.0, 8.0):
        r = kernel_radius(sigma)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        folded = fold_blur_into_weight(conv.weight, sigma, r)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() - base
        with torch.no_grad():
            ref = F.conv2d(gaussian_blur(x, sigma), conv.weight, stride=32)
            got = blurred_patch_conv(x, conv, sigma, folded)
        emit(check="fold", sigma=sigma, radius=r, peak_extra_mib=round(peak / 2**20, 1),
             seconds=round(seconds, 3), max_abs_diff=float((ref - got).abs().max()))


def check_digest() -> None:
    from adapters import RAdaptModel
    from adapters.method import digest
    from adapters.zoo.loading import load_model

    fps = {}
    for dtype in ("float32", "bfloat16", "float16"):
        loaded = load_model("builtin:clip-vit-b32-random", device="cuda", dtype=dtype)
        t0 = time.perf_counter()
        fps[dtype] = RAdaptModel.from_loaded(loaded).fingerprint.weights
        emit(check="digest_time", dtype=dtype, inject_and_digest_s=round(time.perf_counter() - t0, 2))
        del loaded
        torch.cuda.empty_cache()
    for other in ("bfloat16", "float16"):
        diff = digest.difference(fps["float32"], fps[other])
        emit(check="digest_across_dtypes", dtypes=f"float32/{other}", difference=round(diff, 5),
             tolerance=digest.TOLERANCE, same=diff <= digest.TOLERANCE)


def check_engine() -> None:
    from PIL import Image

    from adapters import RAdaptModel
    from service.engine.engine import Engine
    from service.settings import load_settings

    async def run() -> None:
        settings = load_settings(models=["builtin:clip-vit-b32-random"], device="cuda", sigma=3.0, alpha=0.5)
        async with Engine(settings) as engine:
            served = engine.models["builtin:clip-vit-b32-random"]
            assert isinstance(served.rmodel, RAdaptModel)
            img = Image.effect_noise((320, 240), 60).convert("RGB")
            t0 = time.perf_counter()
            results = await asyncio.gather(*(engine.classify(img, ["cat", "dog", "car"], robust=i % 2 == 0)
                                             for i in range(32)))
            emit(check="engine_robust_sigma3", dtype=str(served.loaded.dtype).removeprefix("torch."),
                 requests=len(results), robust=sum(r.robust for r in results),
                 seconds=round(time.perf_counter() - t0, 2), top=results[0].value[0][0])

    asyncio.run(run())


def main() -> int:
    if not torch.cuda.is_available():
        emit(check="skipped", reason="no CUDA")
        return 0
    for check in (check_dtype, check_fold, check_digest, check_engine):
        try:
            check()
        except Exception as exc:  # report every check, even after one fails
            emit(check=check.__name__, error=f"{type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
