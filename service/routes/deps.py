"""What every route needs: the engine, key checks, JSON with timing headers, disconnect handling."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import Request
from starlette.responses import Response

from service.engine.engine import Engine
from service.engine.generation import Generating
from service.engine.tasks import TaskResult
from service.errors import ClientClosed, Forbidden, Unauthorized
from service.settings import Settings

T = TypeVar("T")


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


def settings_of(request: Request) -> Settings:
    """The engine's settings: the app has no others."""
    return request.app.state.engine.settings


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _check(request: Request, key: str, what: str) -> None:
    token = _bearer(request)
    if token is None:
        raise Unauthorized(f"{what} needs an API key: send 'Authorization: Bearer <key>'")
    if not hmac.compare_digest(token.encode(), key.encode()):
        raise Forbidden(f"the API key is not valid for {what}", "invalid_api_key")


def require_api_key(request: Request) -> None:
    """Inference endpoints: the api key when one is configured (the admin key also works)."""
    s = settings_of(request)
    if s.api_key is None:
        return
    token = _bearer(request)
    if s.admin_key is not None and token is not None and hmac.compare_digest(
            token.encode(), s.admin_key.get_secret_value().encode()):
        return
    _check(request, s.api_key.get_secret_value(), "this endpoint")


def require_admin_key(request: Request) -> None:
    """Adapter management: the admin key when configured, else the api key when configured."""
    _check_admin(request, "adapter management")


def require_attack_key(request: Request) -> None:
    """Playground attacks (expensive): the same key as adapter management."""
    _check_admin(request, "playground attacks (they need the admin key)")


def _check_admin(request: Request, what: str) -> None:
    s = settings_of(request)
    key = s.admin_key or s.api_key
    if key is not None:
        _check(request, key.get_secret_value(), what)


def json_response(body: Any, result: TaskResult | None = None, status: int = 200) -> Response:
    """Compact JSON (no pydantic round trip) with x-queue-time / x-inference-time headers."""
    headers = {}
    if result is not None:
        headers["x-queue-time"] = f"{result.queue_time:.6f}"
        headers["x-inference-time"] = f"{result.inference_time:.6f}"
        if result.adapter_id is not None:
            headers["x-adapter-id"] = result.adapter_id
    return Response(json.dumps(body, separators=(",", ":")), status_code=status,
                    media_type="application/json", headers=headers)


async def generation_result(request: Request, running: Generating) -> TaskResult:
    """The result of a started generation; a client that goes away (or any failure) cancels it."""
    try:
        return await unless_disconnected(request, running.result())
    finally:
        running.cancel()


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; if the client goes away first, cancel it (its queued items are then skipped)
    and raise ClientClosed."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        raise ClientClosed("client closed the connection")
    return task.result()


async def _disconnect(request: Request) -> None:
    """Returns when the client disconnects (the body has already been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
