"""A served model: the loaded weights with R-Adapt injected, its adapters, runner and worker.

``load_served`` (a thread at start) loads, injects, builds the white ``default`` adapter and puts the
model behind its worker: the dynamic batcher for CLIP, the continuous-batching scheduler for chat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from adapters import Adapter, RAdaptModel
from adapters.method.acquire import white_adapter
from adapters.zoo import robust_defaults
from adapters.zoo.loading import LoadedModel, ModelLoadError
from service.adapters_manager import DEFAULT, AdapterStore, parse_file
from service.engine.batcher import Batcher
from service.engine.scheduler import GenerationScheduler, SchedulerLimits
from service.errors import ServiceError
from service.metrics import Metrics
from service.runners.base import BatchRunner, GenerationRunner
from service.settings import Settings

log = logging.getLogger(__name__)


class Worker(Protocol):
    """What the engine needs from a model's worker: the CLIP ``Batcher`` or the ``GenerationScheduler``
    today; a vLLM-backed generator (GPU, image embeddings in) would be another implementation."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def abort_all(self, error: ServiceError) -> None: ...

    def wedged(self, after: float) -> bool: ...


@dataclass
class ServedModel:
    name: str
    family: str
    loaded: LoadedModel
    rmodel: RAdaptModel
    runner: BatchRunner | GenerationRunner  # ClipRunner | VlmRunner
    adapters: AdapterStore
    worker: Worker  # Batcher | GenerationScheduler

    @property
    def tasks(self) -> frozenset[str]:
        return self.runner.tasks

    # Typed views of ``runner`` for the engine's calls. ``Engine.get`` has checked the task, so no check
    # here: an isinstance against a protocol costs ~19 us per request on the event loop.
    @property
    def batch_runner(self) -> BatchRunner:
        """The runner of a CLIP-family model (classify, embeddings)."""
        return cast(BatchRunner, self.runner)

    @property
    def generation_runner(self) -> GenerationRunner:
        """The runner of a chat model (chat, caption, vqa)."""
        return cast(GenerationRunner, self.runner)


def load_served(name: str, settings: Settings, metrics: Metrics, loader: Callable[..., LoadedModel]) -> ServedModel:
    start = time.monotonic()
    s = settings
    loaded = loader(name, device=s.device, dtype=s.dtype)
    rmodel = RAdaptModel.from_loaded(loaded)
    store = AdapterStore(name, rmodel.fingerprint, loaded.device, loaded.dtype, metrics,
                         allow_weight_mismatch=s.allow_weight_mismatch)
    sigma, alpha = s.sigma, s.alpha
    swept = robust_defaults(name)  # a builtin model's own swept values, unless the server was told
    if swept is not None:
        sigma, alpha = swept[0] if sigma is None else sigma, swept[1] if alpha is None else alpha
    store.put(DEFAULT, white_adapter(rmodel, sigma, alpha, source=f"white:{name}"))
    runner: BatchRunner | GenerationRunner
    worker: Batcher | GenerationScheduler
    if loaded.family == "clip":
        from service.runners.clip import ClipRunner

        clip = ClipRunner(loaded, rmodel, s.label_cache_size)
        runner, worker = clip, Batcher(name, clip.run_batch, store.snapshot, metrics, s.max_batch_size,
                                       s.max_wait_ms / 1000.0, s.max_queue, s.request_timeout_s)
    else:
        from service.runners.vlm import VlmRunner

        vlm = VlmRunner(loaded, rmodel)
        runner, worker = vlm, GenerationScheduler(name, vlm, store.snapshot, metrics,
                                                  SchedulerLimits(s.max_running_requests, s.max_batch_tokens,
                                                                  s.max_queue))
    seconds = time.monotonic() - start
    metrics.model_load_duration.labels(model=name).set(seconds)
    log.info("serving %s (%s) on %s, %s; loaded in %.1f s", name, loaded.family, loaded.device, loaded.dtype,
             seconds)
    return ServedModel(name, loaded.family, loaded, rmodel, runner, store, worker)


def attach_adapters(models: dict[str, ServedModel], specs: list[str]) -> None:
    """``--adapter NAME=FILE``: each to the first served model it fits."""
    for spec in specs:
        name, _, path = spec.partition("=")
        try:
            adapter = parse_file(Path(path).expanduser())
        except ServiceError as exc:
            raise ModelLoadError(f"--adapter {spec}: {exc.message}") from None
        fits = [m for m in models.values() if _fits(adapter, m)]
        if not fits:
            raise ModelLoadError(f"--adapter {spec}: fits none of the served models ({', '.join(models)}); "
                                 "build it with `radapt adapter build --model ...`")
        fits[0].adapters.put(name, adapter)


def _fits(adapter: Adapter, served: ServedModel) -> bool:
    try:
        adapter.config.fingerprint.check_fits(served.rmodel.fingerprint)
    except ValueError:
        return False
    return True
