"""/playground: the page, its static files, its config and its attack (mounted with --playground)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import FileResponse, Response

from service.errors import NotFound
from service.playground import STATIC, Playground
from service.routes.deps import json_response, require_api_key, require_attack_key, unless_disconnected
from service.schemas.playground import AttackRequest

router = APIRouter(tags=["playground"])
off_router = APIRouter(include_in_schema=False)  # mounted instead when the playground is off
# the page may load and call nothing but this server (it works offline, and nothing leaks elsewhere)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
FILES = {p.name: p for p in STATIC.iterdir() if p.suffix in TYPES}


def playground_of(request: Request) -> Playground:
    return request.app.state.playground


def _file(name: str) -> Response:
    path = FILES.get(name)
    if path is None:
        raise NotFound(f"no playground file {name!r}", "not_found")
    return FileResponse(path, media_type=TYPES[path.suffix] + "; charset=utf-8",
                        headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-cache"})


@router.api_route("/playground", methods=["GET", "HEAD"], include_in_schema=False)
async def page() -> Response:
    return _file("index.html")


@router.api_route("/playground/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def static(name: str) -> Response:
    return _file(name)


@router.get("/playground/api/config", dependencies=[Depends(require_api_key)])
async def config(request: Request) -> Response:
    """Served CLIP models and their adapters, default labels, attack limits and sample images."""
    return json_response(playground_of(request).config())


@router.post("/playground/api/attack", dependencies=[Depends(require_attack_key)])
async def attack(body: AttackRequest, request: Request) -> Response:
    """PGD against one mode on the server, then both modes on the clean and the attacked image."""
    playground = playground_of(request)
    playground.admit(request.client.host if request.client else "unknown")
    result = await unless_disconnected(request, playground.attack(
        image=body.image, labels=body.labels, eps=body.eps, steps=body.steps, template=body.template,
        model=body.model, adapter=body.adapter, target=body.target))
    return json_response(result)


@off_router.api_route("/playground", methods=["GET", "HEAD", "POST"])
@off_router.api_route("/playground/{rest:path}", methods=["GET", "HEAD", "POST"])
async def off() -> Response:
    raise NotFound("the playground is off on this server: start it with --playground (RADAPT_PLAYGROUND=true)",
                   "playground_disabled")
