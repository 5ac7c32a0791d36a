"""The FastAPI application: ``create_app(settings, engine=None)``.

Without an engine the app builds one and loads it in the background at start, so /health/live
answers at once and /health/ready turns 200 when every model is loaded and warm. With an engine
(tests, notebooks) the caller owns its lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi_offline import FastAPIOffline

from service.adapter_sync import AdapterSync
from service.engine.engine import Engine
from service.errors import error_response, install_handlers
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)


class RequestMiddleware:
    """Pure ASGI (cheap): request id, body size limit, request count and latency per route."""

    def __init__(self, app: Any, metrics: Metrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body
        # process prefix + counter: unique per server, and cheaper than uuid4 (a syscall) per request
        self._prefix, self._ids = uuid.uuid4().hex[:12], itertools.count(1)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"")[:64] or f"{self._prefix}-{next(self._ids)}".encode()
        scope.setdefault("state", {})["request_id"] = rid.decode("latin-1")  # for log lines
        status = 500

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        try:
            if length > self.max_body:
                self.metrics.count_error("payload_too_large")
                await error_response(413, f"request body exceeds {self.max_body} bytes", "invalid_request_error",
                                     "payload_too_large")(scope, receive, send_with_id)
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        finally:
            endpoint = getattr(scope.get("route"), "path", "other")
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            self.metrics.request_duration.labels(endpoint=endpoint).observe(time.perf_counter() - start)

    def _limited(self, receive: Callable) -> Callable:
        """Bodies without (or with a false) content-length are counted as they arrive."""
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise HTTPException(413, f"request body exceeds {self.max_body} bytes")
            return message
        return limited


def create_app(settings: Settings, engine: Engine | None = None,
               on_fatal: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The app. ``on_fatal`` is called if the background model load fails (``radapt serve`` exits)."""
    owns_engine = engine is None
    engine = engine if engine is not None else Engine(settings)
    if engine.settings is not settings:
        raise ValueError("create_app(settings, engine): pass the engine's own settings (one Settings object)")

    sync = adapter_sync(settings, engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()  # `radapt serve` starts the drain on it from SIGTERM
        task = None
        if owns_engine:
            task = asyncio.create_task(_start(engine, on_fatal, sync))
        elif sync is not None:
            task = asyncio.create_task(sync.run())
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                await engine.stop()

    # /docs and /redoc from assets in the fastapi-offline package, not a CDN: they work offline
    app = FastAPIOffline(title="R-Adapt Serve", version="0.1.0", lifespan=lifespan, static_url="/docs-assets",
                         description="CLIP, LLaVA and Qwen-VL with R-Adapt robustness, switchable per request.")
    app.state.engine, app.state.settings, app.state.metrics = engine, settings, engine.metrics
    app.state.adapter_sync = sync
    install_handlers(app, engine.metrics.count_error)
    from service.routes import adapters, chat, classify, embeddings, health, metrics, models, tasks

    for module in (classify, embeddings, chat, tasks, adapters, models, health, metrics):
        app.include_router(module.router)
    from service.routes import playground

    if settings.playground:
        from service.playground import Playground

        app.state.playground = Playground(settings, engine)
        app.include_router(playground.router)
    else:
        app.include_router(playground.off_router)
    app.add_middleware(RequestMiddleware, metrics=engine.metrics, max_body=settings.max_body_bytes)
    return app


def adapter_sync(settings: Settings, engine: Engine) -> AdapterSync | None:
    """The adapter-store sync of ``--adapter-store`` (None without one); it reads ``engine.models`` live."""
    if not settings.adapter_store:
        return None
    from service.store_backends import open_store

    return AdapterSync(open_store(settings.adapter_store), engine.models, settings.adapter_sync_s, engine.metrics,
                       settings.allow_weight_mismatch)


async def _start(engine: Engine, on_fatal: Callable[[BaseException], None] | None,
                 sync: AdapterSync | None = None) -> None:
    try:
        await engine.start()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("model loading failed: %s", exc)
        if on_fatal is not None:
            on_fatal(exc)
        return
    if sync is not None:
        await sync.run()
