"""The limit: in-process batched forward throughput of the served model, no HTTP, no decoding.

Serving throughput at saturation is reported as a ratio of this figure. The forward is the
image-embedding forward the server runs (``get_image_features``), at the server's batch size,
in the same dtype, on pixels preprocessed once before the clock starts. The bench alternates
limit and serving measurements while the server idles, so both see the same machine load.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from bench.images import decode


class Limit:
    """The served model loaded in this process, ready to time batched forwards."""

    def __init__(self, model_name: str, dtype: str, batch_size: int, images: list[bytes],
                 device: str = "cpu") -> None:
        from adapters.method.acquire import white_adapter
        from adapters.method.model import RAdaptModel
        from adapters.zoo.loading import load_model

        loaded = load_model(model_name, device=device, dtype=dtype)
        self.device = loaded.device
        ip = loaded.processor.image_processor
        pil = [decode(images[i % len(images)]) for i in range(batch_size)]
        t0 = time.perf_counter()
        px = ip(images=pil, return_tensors="pt")["pixel_values"]  # [B, 3, H, W]
        self.preprocess_img_per_s = batch_size / (time.perf_counter() - t0)
        self.batch_size = batch_size
        self.model = loaded.model
        self.pixels = px.to(loaded.device, loaded.dtype)
        self.rmodel = RAdaptModel.from_loaded(loaded)
        adapter = white_adapter(self.rmodel).to(loaded.device, loaded.dtype)
        self.robust_samples = [adapter] * batch_size
        self.done = {"standard": [0, 0.0, 0.0], "robust": [0, 0.0, 0.0]}  # mode -> [images, seconds, cpu s]
        self._forward("standard")  # warm-up: allocations and oneDNN kernel selection
        self._forward("robust")

    @torch.inference_mode()
    def _forward(self, mode: str) -> None:
        with self.rmodel.control(self.robust_samples if mode == "robust" else None):
            self.model.get_image_features(pixel_values=self.pixels)
        if self.device.type == "cuda":  # kernels are asynchronous: time their completion
            torch.cuda.synchronize(self.device)

    def run(self, mode: str, seconds: float, min_batches: int = 2) -> float:
        """Forward batches for about ``seconds``; adds to the totals; returns this stint's img/s."""
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while n < min_batches or time.perf_counter() - t0 < seconds:
            self._forward(mode)
            n += 1
        dt = time.perf_counter() - t0
        self.done[mode][0] += n * self.batch_size
        self.done[mode][1] += dt
        self.done[mode][2] += time.process_time() - c0
        return n * self.batch_size / dt

    def img_per_s(self, mode: str = "standard") -> float:
        images, seconds, _ = self.done[mode]
        return images / seconds if seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "img_per_s": round(self.img_per_s("standard"), 3),
                "robust_img_per_s": round(self.img_per_s("robust"), 3),
                "robust_vs_standard": round(self.img_per_s("robust") / max(self.img_per_s("standard"), 1e-9), 3),
                "seconds": round(self.done["standard"][1] + self.done["robust"][1], 2),
                "cpu_ms_per_img": round(self.done["standard"][2] * 1e3 / max(self.done["standard"][0], 1), 2),
                "preprocess_img_per_s": round(self.preprocess_img_per_s, 3)}
