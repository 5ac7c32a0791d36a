"""The engine: served models, their adapters and batchers, usable without HTTP.

    async with Engine(load_settings(models=["builtin:tiny-clip"])) as engine:
        result = await engine.classify(image, ["cat", "dog"], robust=True)

``start()`` loads every model (in a thread), injects R-Adapt, builds the white "default" adapter,
attaches the adapters named in the settings, warms each runner up and starts one batcher per
model. Task methods live in ``service.engine.tasks`` and are bound here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters import RAdaptModel
from adapters.acquire import white_adapter
from adapters.loading import LoadedModel, ModelLoadError, load_model
from service.adapters_manager import DEFAULT, AdapterStore, parse_file
from service.engine.batcher import Batcher, Done, WorkItem
from service.errors import BadRequest, NotFound, NotReady, ServiceError
from service.media import MediaLimits
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    name: str
    family: str
    loaded: LoadedModel
    rmodel: RAdaptModel
    runner: Any  # ClipRunner | VlmRunner
    adapters: AdapterStore
    batcher: Batcher
    load_seconds: float

    @property
    def tasks(self) -> frozenset[str]:
        return self.runner.tasks


def make_runner(loaded: LoadedModel, rmodel: RAdaptModel, settings: Settings) -> Any:
    if loaded.family == "clip":
        from service.runners.clip import ClipRunner

        return ClipRunner(loaded, rmodel, settings.label_cache_size)
    from service.runners.vlm import VlmRunner

    return VlmRunner(loaded, rmodel, settings)


class Engine:
    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 loader: Callable[..., LoadedModel] = load_model) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.limits = MediaLimits.of(settings)  # default; an app passes its own per request
        self._loader = loader
        self.models: dict[str, ServedModel] = {}
        self.pool = ThreadPoolExecutor(max_workers=settings.preprocess_workers, thread_name_prefix="preprocess")
        self.state = "created"  # created | loading | ready | failed | stopped
        self.error: str | None = None

    # lifecycle
    async def __aenter__(self) -> "Engine":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Load, adapt and warm up every model, then start the batchers. Raises ModelLoadError."""
        self.state = "loading"
        try:
            for name in self.settings.models:
                self.models[name] = await asyncio.to_thread(self._load, name)
            await asyncio.to_thread(self._attach_configured_adapters)
            if self.settings.warmup:
                for served in self.models.values():
                    await asyncio.to_thread(served.runner.warmup, served.adapters.snapshot())
        except Exception as exc:
            self.state, self.error = "failed", str(exc)
            raise
        for served in self.models.values():
            served.batcher.start()
        self.state = "ready"

    async def stop(self) -> None:
        for served in self.models.values():
            await served.batcher.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.state = "stopped"

    def _load(self, name: str) -> ServedModel:
        start = time.monotonic()
        loaded = self._loader(name, device=self.settings.device, dtype=self.settings.dtype)
        rmodel = RAdaptModel.from_loaded(loaded)
        store = AdapterStore(name, rmodel.fingerprint, loaded.device, loaded.dtype, self.metrics)
        store.put(DEFAULT, white_adapter(rmodel, self.settings.sigma, self.settings.alpha, source=f"white:{name}"))
        runner = make_runner(loaded, rmodel, self.settings)
        s = self.settings
        batcher = Batcher(name, runner.run_batch, store.snapshot, self.metrics, s.max_batch_size,
                          s.max_wait_ms / 1000.0, s.max_queue, s.request_timeout_s)
        seconds = time.monotonic() - start
        self.metrics.model_load_duration.labels(model=name).set(seconds)
        log.info("serving %s (%s) on %s, %s; loaded in %.1f s", name, loaded.family, loaded.device,
                 loaded.dtype, seconds)
        return ServedModel(name, loaded.family, loaded, rmodel, runner, store, batcher, seconds)

    def _attach_configured_adapters(self) -> None:
        for spec in self.settings.adapters:
            name, _, path = spec.partition("=")
            try:
                adapter = parse_file(Path(path).expanduser())
            except ServiceError as exc:
                raise ModelLoadError(f"--adapter {spec}: {exc.message}") from None
            fits = [m for m in self.models.values() if _fits(adapter, m)]
            if not fits:
                raise ModelLoadError(f"--adapter {spec}: fits none of the served models "
                                     f"({', '.join(self.models)}); build it with `radapt adapter build --model ...`")
            fits[0].adapters.put(name, adapter)

    # lookups
    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def wedged(self) -> list[str]:
        after = max(60.0, 2 * self.settings.request_timeout_s)
        return [name for name, m in self.models.items() if m.batcher.wedged(after)]

    def get(self, model: str | None, task: str) -> ServedModel:
        if not self.ready:
            raise NotReady("models are still loading; retry shortly" if self.state in ("created", "loading")
                           else f"server is not serving ({self.state})", headers={"Retry-After": "5"})
        if model is None:
            for served in self.models.values():
                if task in served.tasks:
                    return served
            raise BadRequest(f"no served model supports {task}; served: {', '.join(self.models)}",
                             "unsupported_task")
        served = self.models.get(model)
        if served is None:
            raise NotFound(f"model {model!r} is not served; served: {', '.join(self.models)}", "model_not_found")
        if task not in served.tasks:
            raise BadRequest(f"model {model} ({served.family}) does not support {task}", "unsupported_task")
        return served

    def mode(self, served: ServedModel, robust: bool | None, adapter: str | None) -> str | None:
        """The adapter name a request runs with (None = standard mode)."""
        if adapter is not None:
            if robust is False:
                raise BadRequest("robust=false contradicts adapter=...; drop one", "conflicting_mode")
            if adapter not in served.adapters.snapshot():
                raise NotFound(f"model {served.name} has no adapter {adapter!r}", "adapter_not_found")
            return adapter
        robust = self.settings.default_robust if robust is None else robust
        return DEFAULT if robust else None

    # execution
    async def in_pool(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def run(self, served: ServedModel, items: list[WorkItem]) -> list[Done]:
        """Queue ``items`` (all or none admitted) and wait for all of them."""
        batcher = served.batcher
        admitted: list[WorkItem] = []
        try:
            for item in items:
                admitted.append(batcher.submit(item))
            counter = self.metrics.robust_requests
            for item in items:
                counter.labels(model=served.name, mode="standard" if item.adapter is None else "robust").inc()
            return await asyncio.gather(*(batcher.wait(item) for item in admitted))
        except BaseException:
            for item in admitted:
                item.future.cancel()
            raise


def _fits(adapter: Any, served: ServedModel) -> bool:
    try:
        adapter.config.fingerprint.check_fits(served.rmodel.fingerprint)
    except ValueError:
        return False
    return True
