"""One error hierarchy, one JSON shape, one handler.

Every error the service answers has the OpenAI shape ``{"error": {"message", "type", "code"}}``.
``ServiceError`` subclasses carry their HTTP status; anything else becomes a 500 whose message
never echoes internals (the details go to the log with the request id).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)


class ServiceError(Exception):
    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}


class BadRequest(ServiceError):
    status, type, code = 400, "invalid_request_error", "bad_request"


class Unauthorized(ServiceError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class Forbidden(ServiceError):
    status, type, code = 403, "permission_error", "forbidden"


class NotFound(ServiceError):
    status, type, code = 404, "not_found_error", "not_found"


class Conflict(ServiceError):
    status, type, code = 409, "invalid_request_error", "conflict"


class PayloadTooLarge(ServiceError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"


class Overloaded(ServiceError):
    status, type, code = 429, "rate_limit_error", "queue_full"


class NotReady(ServiceError):
    status, type, code = 503, "server_error", "not_ready"


class RequestTimeout(ServiceError):
    status, type, code = 504, "server_error", "timeout"


class ClientClosed(ServiceError):
    """The client went away before its answer was ready (nginx's 499; nobody reads the body)."""

    status, type, code = 499, "invalid_request_error", "client_closed"


class InferenceFailed(ServiceError):
    """A batch raised; its items get this (the cause is logged, not returned)."""

    status, type, code = 500, "server_error", "inference_failed"


STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
                415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


# HTTPExceptions raised below our code (FastAPI's body parsing, the body-size middleware) get the
# same codes our own errors use for the same fault
BODY_PARSE_ERROR = "There was an error parsing the body"


def _http_code(exc: StarletteHTTPException) -> tuple[int, str, str]:
    """(status, code, message) of an HTTPException, in the service's vocabulary."""
    if exc.status_code == 413:
        return 413, "payload_too_large", str(exc.detail)
    if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
        return 400, "invalid_json", "request body is not valid JSON (send UTF-8 JSON)"
    return exc.status_code, f"http_{exc.status_code}", str(exc.detail)


def error_response(status: int, message: str, type_: str, code: str,
                   headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": {"message": message, "type": type_, "code": code}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "request body is not valid JSON", "invalid_json"
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more, "invalid_request"


def _rid(request: Request) -> str:
    return getattr(request.state, "request_id", "-")


def install_handlers(app: FastAPI, count_error: Any) -> None:
    """Register the handlers; ``count_error(reason)`` feeds radapt_errors_total."""

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> Response:
        count_error(exc.code)
        if exc.status >= 500:
            log.warning("request %s failed: %s", _rid(request), exc.message)
        return error_response(exc.status, exc.message, exc.type, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        message, code = _validation_message(exc)
        count_error(code)
        return error_response(400 if code == "invalid_json" else 422, message, "invalid_request_error", code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        status, code, message = _http_code(exc)
        count_error(code)
        return error_response(status, message, STATUS_TYPES.get(status, "server_error"), code,
                              getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        count_error("internal_error")
        log.exception("request %s: unhandled error in %s %s", _rid(request), request.method, request.url.path)
        return error_response(500, "internal server error", "server_error", "internal_error")
