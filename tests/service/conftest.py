"""Shared fixtures of the service tests: one tiny-CLIP engine per session, apps over it, images."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from PIL import Image


def image_of(seed: int = 0, size: tuple[int, int] = (40, 30)) -> Image.Image:
    """A deterministic noise image (width, height)."""
    rs = np.random.RandomState(seed)
    return Image.fromarray(rs.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def data_uri(seed: int = 0, size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> str:
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(encode(image_of(seed, size), fmt)).decode()


@pytest.fixture()
def png() -> Callable[..., str]:
    """``png(seed=0, size=(w, h), fmt="PNG")`` -> a data URI of a noise image."""
    return data_uri


@pytest.fixture()
def images() -> Any:
    """Image helpers: ``images.image_of(seed, size)``, ``images.encode(img, fmt)``, ``images.data_uri(...)``."""
    from types import SimpleNamespace

    return SimpleNamespace(image_of=image_of, encode=encode, data_uri=data_uri)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """``free_port()`` -> a port on 127.0.0.1 nobody listens on right now."""
    return _free_port


def clip_settings(**overrides: Any) -> Any:
    from service.settings import load_settings

    values: dict[str, Any] = dict(models=["builtin:tiny-clip"], device="cpu", dtype="float32", max_wait_ms=5.0)
    values.update(overrides)
    return load_settings(**values)


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def clip_engine() -> AsyncIterator[Any]:
    """A started Engine serving builtin:tiny-clip (shared: tests add adapters under unique names)."""
    from service.engine.engine import Engine

    async with Engine(clip_settings()) as engine:
        yield engine


@pytest_asyncio.fixture(loop_scope="session")
async def client(clip_engine: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the ASGI app over the shared engine."""
    from service.app import create_app

    app = create_app(clip_engine.settings, clip_engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


@pytest.fixture()
def make_client() -> Callable[..., Any]:
    """``async with make_client(api_key=..., max_labels=...) as client``: a tiny-CLIP engine with these
    settings (the app has no settings of its own) and an httpx client on its app."""
    from service.app import create_app
    from service.engine.engine import Engine

    @contextlib.asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = clip_settings(warmup=False, **overrides)
        async with Engine(settings) as engine:
            app = create_app(settings, engine)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
                yield c
    return make
