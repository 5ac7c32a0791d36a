"""/v1/adapters: list, load or hot-swap (from the adapter directory or an upload), remove.

Loading never touches the backbone: the file is parsed and checked (safetensors, fingerprint,
token layout, values, weight digest) in a worker thread, then the model's adapter dict is
replaced; batches already running keep the snapshot they started with. A JSON body is validated
like every other route's (422 ``invalid_request``, 400 ``invalid_json``). With an adapter store
(``--adapter-store``) loads and removals write through to it first, and every replica converges.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.adapters_manager import AdapterInfo, check_name, parse_bytes, parse_file, resolve_in_dir
from service.engine.engine import Engine, ServedModel
from service.errors import BadRequest, NotFound, NotReady, PayloadTooLarge
from service.routes.deps import engine_of, json_response, require_admin_key, require_api_key, settings_of
from service.schemas.adapters import AdapterLoadRequest, AdapterOut

router = APIRouter(tags=["adapters"])


def _model(engine: Engine, name: str | None) -> ServedModel:
    if not engine.ready:
        raise NotReady("models are still loading; retry shortly", headers={"Retry-After": "5"})
    if name is None:
        return next(iter(engine.models.values()))
    if name not in engine.models:
        raise NotFound(f"model {name!r} is not served; served: {', '.join(engine.models)}", "model_not_found")
    return engine.models[name]


def _out(info: AdapterInfo) -> dict[str, Any]:
    """The store's view of one adapter -> its JSON (the ``AdapterOut`` schema)."""
    return AdapterOut.model_validate(info, from_attributes=True).model_dump()


@router.get("/v1/adapters", dependencies=[Depends(require_api_key)])
async def list_adapters(request: Request, model: str | None = None) -> Response:
    engine = engine_of(request)
    models = [_model(engine, model)] if model else list(engine.models.values())
    body = {"object": "list", "data": [_out(i) for m in models for i in m.adapters.infos()]}
    sync = request.app.state.adapter_sync
    if sync is not None:  # what this replica serves is `data`; the store it converges to is `store`
        body["store"] = sync.status()
    return json_response(body)


@router.post("/v1/adapters", dependencies=[Depends(require_admin_key)],
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"schema": AdapterLoadRequest.model_json_schema()},
                 "multipart/form-data": {"schema": {"type": "object", "required": ["name", "file"], "properties": {
                     "name": {"type": "string"}, "model": {"type": "string"},
                     "file": {"type": "string", "format": "binary"}}}}}}})
async def load_adapter(request: Request) -> Response:
    """JSON ``{name, path, model?}`` loads from the adapter directory; multipart ``name``, ``file``,
    ``model?`` loads an uploaded file. An existing name is hot-swapped."""
    engine, settings = engine_of(request), settings_of(request)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        name, model, data = await _read_upload(request, settings.max_body_bytes)
        check_name(name)
        served = _model(engine, model)
        adapter = await asyncio.to_thread(parse_bytes, data, f"upload {name!r}")
    elif ctype.startswith("application/json"):
        try:
            body = AdapterLoadRequest.model_validate_json(await request.body())
        except ValidationError as exc:  # the same mapping as every route's body (422, or 400 invalid_json)
            raise RequestValidationError(exc.errors(include_url=False)) from None
        check_name(body.name)
        served = _model(engine, body.model)
        path = resolve_in_dir(settings.adapter_dir, body.path)
        adapter = await asyncio.to_thread(parse_file, path)
        name = body.name
    else:
        raise BadRequest("send JSON {name, path} or multipart/form-data with name and file", "unsupported_media_type")
    sync = request.app.state.adapter_sync
    if sync is not None:  # write through: the store first, so every replica gets it
        op = await sync.publish(served, name, adapter, settings.allow_weight_mismatch)
    else:
        op = served.adapters.put(name, adapter, settings.allow_weight_mismatch)
    info = next(i for i in served.adapters.infos() if i.name == name)
    return json_response({"op": op, "adapter": _out(info)}, status=200 if op == "swap" else 201)


@router.delete("/v1/adapters/{name}", dependencies=[Depends(require_admin_key)])
async def delete_adapter(name: str, request: Request, model: str | None = None) -> Response:
    served = _model(engine_of(request), model)
    sync = request.app.state.adapter_sync
    if sync is not None:
        await sync.unpublish(served, name)
    else:
        served.adapters.remove(name)
    return json_response({"deleted": True, "name": name, "model": served.name})


async def _read_upload(request: Request, limit: int) -> tuple[str, str | None, bytes]:
    try:
        form = await request.form(max_files=1, max_fields=4)
    except StarletteHTTPException as exc:  # a malformed multipart body (starlette answers 400)
        if exc.status_code != 400:
            raise  # e.g. the body-size limit's 413
        raise BadRequest(f"multipart body cannot be parsed: {exc.detail}", "invalid_upload") from None
    try:
        upload, name, model = form.get("file"), form.get("name"), form.get("model")
        if not isinstance(upload, UploadFile) or not isinstance(name, str) or not name:
            raise BadRequest("multipart upload needs a 'file' part and a 'name' field", "invalid_upload")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge(f"adapter file exceeds {limit} bytes", "adapter_too_large")
        return name, model if isinstance(model, str) and model else None, data
    finally:
        await form.close()

