"""The engine: the one typed API of the service, usable without HTTP.

    async with Engine(load_settings(models=["builtin:tiny-clip"])) as engine:
        result = await engine.classify(image, ["cat", "dog"], robust=True)
        reply = await engine.generate(messages, max_tokens=32)          # on a chat model

Every call goes the same way: the model and mode are resolved, every limit of the one ``Settings``
is checked, admission answers 429 before any expensive work, and one deadline (``request_timeout_s``
from the call) covers decoding, preprocessing, the queue and the model; then the work goes to the
model's dynamic batcher (CLIP) or continuous-batching scheduler (chat). Results say which model,
mode and adapter ran and how long the call waited (``queue_time``: everything but the model's own
time) and ran. ``drain()`` stops admission and lets in-flight work finish (SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adapters.lab.attacks import madry_step, pgd_step
from adapters.zoo.loading import LoadedModel, ModelLoadError, load_model
from service.adapters_manager import DEFAULT
from service.engine.generation import Generating, SamplingRequest, split_messages
from service.engine.models import ServedModel, attach_adapters, load_served
from service.engine.sampling import MAX_STOP_CHARS, MAX_STOP_STRINGS, MIN_TEMPERATURE, SamplingParams
from service.engine.scheduler import GenerationRequest, TokenStream
from service.engine.tasks import STANDARD, ImageInput, Mode, TaskResult, decode_any, to_image
from service.errors import BadRequest, NotFound, NotReady, Overloaded, PayloadTooLarge, RequestTimeout
from service.media import MediaLimits
from service.metrics import Metrics
from service.runners.base import WorkItem, WorkKind
from service.runners.clip import ClipGradient
from service.settings import DEFAULT_TEMPLATE, Settings

log = logging.getLogger(__name__)


class EngineState(str, enum.Enum):
    """The engine's lifecycle; prints and serialises as its bare value (``/health/ready``'s status)."""

    CREATED = "created"
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


class Engine:
    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 loader: Callable[..., LoadedModel] = load_model) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.limits = MediaLimits.of(settings)
        self._loader = loader
        self.models: dict[str, ServedModel] = {}
        self.pool = ThreadPoolExecutor(max_workers=settings.preprocess_workers, thread_name_prefix="preprocess")
        self.state = EngineState.CREATED
        self.started = int(time.time())  # `created` of the model objects (OpenAI's unix seconds)
        self.error: str | None = None
        self._in_flight: dict[str, int] = {}
        self._attacking: set[str] = set()  # models with an attack running
        self._idle = asyncio.Event()

    # lifecycle
    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Load, adapt and warm up every model, then start their workers. Raises ModelLoadError."""
        self.state = EngineState.LOADING
        try:
            for name in self.settings.models:
                self.models[name] = await asyncio.to_thread(load_served, name, self.settings, self.metrics,
                                                            self._loader)
            await asyncio.to_thread(attach_adapters, self.models, self.settings.adapters)
            if self.settings.warmup:
                for served in self.models.values():
                    await asyncio.to_thread(served.runner.warmup, served.adapters.snapshot())
        except Exception as exc:
            self.state, self.error = EngineState.FAILED, str(exc)
            raise
        for served in self.models.values():
            served.worker.start()
        self.state = EngineState.READY

    async def drain(self, grace: float) -> None:
        """Admit nothing new; wait up to ``grace`` s for in-flight calls, then fail the rest with 503."""
        if self.state != EngineState.READY:
            return
        self.state = EngineState.DRAINING
        log.info("draining: %d calls in flight, grace %.0f s", sum(self._in_flight.values()), grace)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wait_idle(), grace)
        left = sum(self._in_flight.values())
        if left:
            log.warning("drain grace over: %d calls still in flight get 503", left)
            for served in self.models.values():
                served.worker.abort_all(NotReady("server is shutting down", "shutting_down"))

    async def _wait_idle(self) -> None:
        while sum(self._in_flight.values()):
            self._idle.clear()
            await self._idle.wait()

    async def stop(self) -> None:
        for served in self.models.values():
            await served.worker.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.state = EngineState.STOPPED

    # lookups
    @property
    def ready(self) -> bool:
        return self.state == EngineState.READY

    def wedged(self) -> list[str]:
        after = max(60.0, 2 * self.settings.request_timeout_s)
        return [name for name, m in self.models.items() if m.worker.wedged(after)]

    def get(self, model: str | None, task: str) -> ServedModel:
        if not self.ready:
            if self.state == EngineState.DRAINING:
                raise NotReady("server is shutting down; retry on another replica", "shutting_down")
            starting = self.state in (EngineState.CREATED, EngineState.LOADING)
            raise NotReady("models are still loading; retry shortly" if starting
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

    def mode(self, served: ServedModel, robust: bool | None, adapter: str | None) -> Mode:
        """The mode a request runs in: the one place ``robust``, ``adapter`` and ``default_robust`` meet."""
        if adapter is not None:
            if robust is False:
                raise BadRequest("robust=false contradicts adapter=...; drop one", "conflicting_mode")
            if adapter not in served.adapters.snapshot():
                raise NotFound(f"model {served.name} has no adapter {adapter!r}", "adapter_not_found")
            return Mode(adapter)
        robust = self.settings.default_robust if robust is None else robust
        return Mode(DEFAULT) if robust else STANDARD

    # admission, deadline, pool
    def _admit(self, served: ServedModel) -> float:
        """The one admission path: 429 while the model already holds ``max_queue`` calls, before any
        expensive work. Returns the call's deadline; the caller must ``_release`` once done."""
        name = served.name
        if self._in_flight.get(name, 0) >= self.settings.max_queue:
            raise Overloaded(f"model {name} has {self._in_flight[name]} requests in flight; retry later",
                             headers={"Retry-After": "1"})
        self._in_flight[name] = self._in_flight.get(name, 0) + 1
        return time.monotonic() + self.settings.request_timeout_s

    def _release(self, served: ServedModel) -> None:
        self._in_flight[served.name] -= 1
        if not sum(self._in_flight.values()):
            self._idle.set()

    @contextlib.contextmanager
    def _admitted(self, served: ServedModel) -> Iterator[float]:
        deadline = self._admit(served)
        try:
            yield deadline
        finally:
            self._release(served)

    async def in_pool(self, deadline: float, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` in the preprocessing pool, answering 504 at ``deadline`` (queue wait included)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise RequestTimeout("request deadline passed before its inputs were decoded")
        future = asyncio.get_running_loop().run_in_executor(self.pool, _unless_late, deadline, fn, *args)
        try:
            return await asyncio.wait_for(future, left)
        except asyncio.TimeoutError:
            raise RequestTimeout("request deadline passed while decoding its inputs") from None

    async def _images(self, deadline: float, refs: Sequence[ImageInput], limits: MediaLimits) -> list[Any]:
        """Fetch and decode one image after another: a request holds at most one pool thread at a time."""
        out = []
        for ref in refs:
            raw = await to_image(ref, limits)
            out.append(await self.in_pool(deadline, decode_any, raw, limits))
        return out

    async def _run(self, served: ServedModel, items: list[WorkItem], deadline: float) -> list[Any]:
        """Queue ``items`` (all or none admitted) and wait for all of them."""
        batcher = served.worker
        admitted: list[WorkItem] = []
        try:
            for item in items:
                item.deadline = deadline
                admitted.append(batcher.submit(item))
            return await asyncio.gather(*(batcher.wait(item) for item in admitted))
        except BaseException:
            for item in admitted:
                item.future.cancel()
            raise

    def _count_mode(self, served: ServedModel, mode: Mode, n: int = 1) -> None:
        self.metrics.robust_requests.labels(model=served.name, mode=mode.label).inc(n)

    # CLIP tasks
    def _check_labels(self, labels: Sequence[str], template: str | None) -> None:
        s = self.settings
        if not labels:
            raise BadRequest("labels is empty", "empty_input")
        if len(labels) > s.max_labels:
            raise PayloadTooLarge(f"{len(labels)} labels; at most {s.max_labels} per request", "too_many_labels")
        if len(set(labels)) != len(labels):
            raise BadRequest("labels must be distinct", "duplicate_labels")
        if template is not None and "{}" not in template:
            raise BadRequest("template must contain {} where the label goes ('{}' = the bare label)",
                             "invalid_template")
        if max(len(x) for x in labels) + len(template or "") > s.max_text_chars:
            raise PayloadTooLarge(f"a label (with its template) exceeds {s.max_text_chars} characters",
                                  "text_too_long")

    async def classify(self, image: ImageInput, labels: Sequence[str], template: str | None = None,
                       top_k: int | None = None, robust: bool | None = None, adapter: str | None = None,
                       model: str | None = None) -> TaskResult:
        """Zero-shot classification: ``value`` is ``[(label, score)]`` sorted by score."""
        served = self.get(model, "classify")
        mode = self.mode(served, robust, adapter)
        self._check_labels(labels, template)
        start = time.monotonic()
        with self._admitted(served) as deadline:
            (img,) = await self._images(deadline, [image], self.limits)
            payload = await self.in_pool(deadline, served.batch_runner.prepare_image, img, labels,
                                         template or DEFAULT_TEMPLATE, top_k)
            self._count_mode(served, mode)
            done = await self._run(served, [WorkItem(WorkKind.IMAGE, payload, mode.adapter)], deadline)
        return TaskResult.of(served.name, mode, done, done[0].value, start)

    async def attack(self, image: ImageInput, labels: Sequence[str], eps: int, steps: int,
                     template: str | None = None, robust: bool = False, adapter: str | None = None,
                     model: str | None = None) -> TaskResult:
        """An L-inf PGD attack on zero-shot classification, crafted here: ``value`` is an ``AttackOutcome``.

        Untargeted: it pushes down the label the attacked mode ranks first on the clean image, at the
        model's input size, ``eps`` in 1/255 (whole 8-bit levels, so the attacked image is an image
        again), Madry's step size, no random start (the same inputs give the same image). Standard
        mode is attacked unless ``robust``/``adapter`` say otherwise (then the gradient runs through
        R-Adapt: an adaptive attack). Each step is one work item of the model's batcher; while other
        requests for the model are in flight, the next step waits until they have had their share of
        the model's time (``attack_share``); one attack per model at a time (429 ``attack_busy``)."""
        s = self.settings
        served = self.get(model, "classify")
        mode = STANDARD  # the attacked mode is explicit: standard unless told (default_robust does not apply)
        if robust or adapter is not None:
            mode = self.mode(served, None if adapter is not None else True, adapter)
        self._check_labels(labels, template)
        if len(labels) < 2:
            raise BadRequest("an attack needs at least two labels to move between", "too_few_labels")
        if isinstance(eps, bool) or not isinstance(eps, int) or not 1 <= eps <= s.attack_max_eps:
            raise BadRequest(f"eps must be a whole number of 1/255 steps from 1 to {s.attack_max_eps}",
                             "invalid_eps")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= s.attack_max_steps:
            raise BadRequest(f"steps must be from 1 to {s.attack_max_steps}", "invalid_steps")
        if served.name in self._attacking:
            raise Overloaded(f"an attack on {served.name} is running; one runs at a time per model",
                             "attack_busy", headers={"Retry-After": "1"})
        start = time.monotonic()
        prompts = tuple((template or DEFAULT_TEMPLATE).replace("{}", label) for label in labels)
        self._attacking.add(served.name)
        result = "error"
        try:
            with self._admitted(served) as deadline:
                (img,) = await self._images(deadline, [image], self.limits)
                x = await self.in_pool(deadline, served.batch_runner.prepare_attack, img)
                x_adv, target, before, uid, model_time, last = x, None, (), None, 0.0, 0.0
                step = madry_step(eps, steps)
                for _ in range(steps):
                    # serving first: while other requests for this model are in flight (decoding, queued or
                    # running), the next step waits until they have had (1 - share) / share of the last step's time
                    pause = attack_pause(self._in_flight[served.name] - 1, last, s.attack_share)
                    if pause > 0:
                        if time.monotonic() + pause > deadline:
                            raise RequestTimeout("request deadline passed while the attack waited behind serving")
                        await asyncio.sleep(pause)
                    item = WorkItem(WorkKind.GRADIENT, ClipGradient(x_adv, prompts, target), mode.adapter)
                    (done,) = await self._run(served, [item], deadline)
                    if target is None:
                        target, before = done.value.target, done.value.probs
                    uid, last = done.adapter_id, done.inference_time
                    model_time += last
                    x_adv = pgd_step(x_adv, done.value.grad, x, eps, step)
            result = "ok"
        except asyncio.CancelledError:  # the client went away
            result = "cancelled"
            raise
        finally:
            self._attacking.discard(served.name)
            self.metrics.attacks.labels(model=served.name, result=result).inc()
        clean = dict(zip(labels, before, strict=True))
        outcome = AttackOutcome(_uint8(x), _uint8(x_adv), labels[target], eps, steps, clean)
        return TaskResult(served.name, mode, uid, outcome,
                          max(0.0, time.monotonic() - start - model_time), model_time)

    async def embed(self, inputs: Sequence[Any], modality: str = "text", robust: bool | None = None,
                    adapter: str | None = None, model: str | None = None) -> TaskResult:
        """Embeddings, L2-normalised: ``value`` is a list of float32 arrays ``[D]``, one per input."""
        s = self.settings
        served = self.get(model, "embeddings")
        if not inputs:
            raise BadRequest("input is empty", "empty_input")
        if len(inputs) > s.max_inputs:
            raise PayloadTooLarge(f"{len(inputs)} inputs; at most {s.max_inputs} per request", "too_many_inputs")
        if modality == "text":
            if any(not isinstance(x, str) or not x for x in inputs):
                raise BadRequest("text inputs must be non-empty strings", "empty_input")
            if max(len(x) for x in inputs) > s.max_text_chars:
                raise PayloadTooLarge(f"a text input exceeds {s.max_text_chars} characters", "text_too_long")
        elif modality != "image":
            raise BadRequest(f"modality must be text or image, not {modality!r}", "invalid_modality")
        mode = self.mode(served, robust, adapter)
        start = time.monotonic()
        runner = served.batch_runner
        with self._admitted(served) as deadline:
            if modality == "image":
                images = await self._images(deadline, inputs, self.limits)
                payloads = [await self.in_pool(deadline, runner.prepare_image, img) for img in images]
                items = [WorkItem(WorkKind.IMAGE, p, mode.adapter) for p in payloads]
                usage = 0
            else:
                mode = STANDARD  # R-Adapt acts on images only: text embeddings are the same in both modes
                payloads = await self.in_pool(deadline, runner.prepare_texts, list(inputs))
                items = [WorkItem(WorkKind.TEXT, p) for p in payloads]
                usage = sum(len(p.ids) for p in payloads)
            self._count_mode(served, mode, len(items))
            done = await self._run(served, items, deadline)
        values = [np.asarray(d.value, dtype=np.float32) for d in done]
        return TaskResult.of(served.name, mode, done, values, start, usage)

    # generation
    async def start_generation(self, messages: Sequence[dict[str, Any]], sampling: SamplingRequest | None = None,
                               robust: bool | None = None, adapter: str | None = None, model: str | None = None,
                               task: str = "chat", stream: bool = False) -> Generating:
        """Validate, decode, preprocess and queue one generation; returns once it is queued.

        ``messages`` in OpenAI's shape (image parts as ``image_url`` with a data URI, bytes or a PIL image).
        The caller must ``await`` the result (or iterate ``deltas()`` when streaming) or ``cancel()`` it."""
        s = self.settings
        served = self.get(model, task)
        mode = self.mode(served, robust, adapter)
        params = self._sampling(sampling or SamplingRequest())
        converted, refs, chars = split_messages(messages)
        if len(refs) > s.max_images_per_request:
            raise PayloadTooLarge(f"{len(refs)} images; at most {s.max_images_per_request} per request",
                                  "too_many_images")
        if chars > s.max_text_chars:
            raise PayloadTooLarge(f"message text exceeds {s.max_text_chars} characters", "text_too_long")
        start = time.monotonic()
        deadline = self._admit(served)
        try:
            images = await self._images(deadline, refs, self.limits)
            prompt = await self.in_pool(deadline, served.generation_runner.prepare, converted, images)
            self._check_context(served, prompt.length, params.max_tokens)
            req = GenerationRequest(prompt, params, mode.adapter, deadline, TokenStream() if stream else None)
            served.worker.submit(req)
            self._count_mode(served, mode)
        except BaseException:
            self._release(served)
            raise
        return Generating(served.name, mode, req, start, lambda: self._release(served))

    async def generate(self, messages: Sequence[dict[str, Any]], sampling: SamplingRequest | None = None,
                       **kw: Any) -> TaskResult:
        """One whole generation: ``value`` is a ``Generation`` (text, usage, finish_reason)."""
        running = await self.start_generation(messages, sampling, **kw)
        try:
            return await running.result()
        finally:
            running.cancel()

    async def stream(self, messages: Sequence[dict[str, Any]], sampling: SamplingRequest | None = None,
                     **kw: Any) -> AsyncIterator[str]:
        """Text deltas of one generation as they are decoded."""
        running = await self.start_generation(messages, sampling, stream=True, **kw)
        try:
            async for delta in running.deltas():
                yield delta
        finally:
            running.cancel()

    def _sampling(self, r: SamplingRequest) -> SamplingParams:
        """Every sampling value checked here, so nothing a client sends can fail a decoding batch."""
        s = self.settings
        max_tokens = s.max_new_tokens if r.max_tokens is None else r.max_tokens
        if not 1 <= max_tokens <= s.max_new_tokens_limit:
            raise BadRequest(f"max_tokens must be between 1 and this server's limit of {s.max_new_tokens_limit}",
                             "max_tokens_too_large" if max_tokens > 1 else "invalid_max_tokens")
        temperature = 0.0 if r.temperature is None else float(r.temperature)
        if not math.isfinite(temperature) or temperature < 0 or temperature > 2 or 0 < temperature < MIN_TEMPERATURE:
            raise BadRequest(f"temperature must be 0 (greedy) or between {MIN_TEMPERATURE} and 2",
                             "invalid_temperature")
        top_p = 1.0 if r.top_p is None else float(r.top_p)
        if not (0.0 < top_p <= 1.0):
            raise BadRequest("top_p must be in (0, 1]", "invalid_top_p")
        stop = (r.stop,) if isinstance(r.stop, str) else tuple(r.stop or ())
        if len(stop) > MAX_STOP_STRINGS or any(not isinstance(x, str) or not 0 < len(x) <= MAX_STOP_CHARS
                                               for x in stop):
            raise BadRequest(f"stop takes at most {MAX_STOP_STRINGS} non-empty strings of at most "
                             f"{MAX_STOP_CHARS} characters", "invalid_stop")
        penalties = (r.presence_penalty or 0.0, r.frequency_penalty or 0.0)
        if any(not (math.isfinite(p) and -2.0 <= p <= 2.0) for p in penalties):
            raise BadRequest("presence_penalty and frequency_penalty must be between -2 and 2", "invalid_penalty")
        if r.seed is not None and not -(2 ** 63) <= r.seed < 2 ** 64:
            raise BadRequest("seed must fit in 64 bits", "invalid_seed")
        return SamplingParams(max_tokens, temperature, top_p, r.seed, stop, *penalties, r.ignore_eos)

    def _check_context(self, served: ServedModel, prompt_tokens: int, max_tokens: int) -> None:
        context = served.generation_runner.context_length
        if context and prompt_tokens + max_tokens > context:
            raise BadRequest(f"prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the model's "
                             f"context of {context} tokens", "context_length_exceeded")
        if prompt_tokens + max_tokens > self.settings.max_batch_tokens:
            raise BadRequest(f"prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds this server's "
                             f"max_batch_tokens of {self.settings.max_batch_tokens}", "context_length_exceeded")


@dataclass(frozen=True)
class AttackOutcome:
    """``original`` and ``attacked``: ``[H, W, 3]`` uint8 at the model's input size, at most ``eps``
    levels apart; ``label``: the label pushed down; ``clean``: the attacked mode's scores on the
    original, by label."""

    original: np.ndarray
    attacked: np.ndarray
    label: str
    eps: int
    steps: int
    clean: dict[str, float]


def attack_pause(others: int, last_step_s: float, share: float) -> float:
    """Seconds an attack waits before its next step: none while no other request is in flight for
    the model, else enough for serving to get ``1 - share`` of the model's time."""
    return last_step_s * (1.0 - share) / share if others > 0 else 0.0


def _uint8(pixels: Any) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] -> ``[H, W, 3]`` uint8."""
    return (pixels.clamp(0.0, 1.0) * 255.0).round().to(dtype=torch.uint8).permute(1, 2, 0).numpy().copy()


def _unless_late(deadline: float, fn: Callable[..., Any], *args: Any) -> Any:
    """Pool side: skip work whose request already timed out while it waited for a thread."""
    if time.monotonic() > deadline:
        raise RequestTimeout("request deadline passed while it waited for a decoding thread")
    return fn(*args)


__all__ = ["AttackOutcome", "Engine", "EngineState", "ModelLoadError", "ServedModel", "TaskResult"]
