"""Every error leaves as the OpenAI envelope, whatever raised it.

Handlers for our :class:`OrchestratorError` hierarchy, Starlette's HTTP errors (404, 405, ...),
FastAPI's validation errors (-> 400 with ``param`` naming the field) and anything unexpected
(-> 500 without internals; the exception type is logged, never the request).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from app.errors import (
    PARAM_MAX_CHARS,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    OrchestratorError,
    PayloadTooLarge,
)
from app.observability.logging import get_logger
from app.scrub import cap_text

log = get_logger("errors")

JSON = "application/json"


def error_response(error: OrchestratorError) -> Response:
    return Response(error.body(), status_code=error.status, media_type=JSON, headers=error.headers)


# Names pydantic puts in an error location for the member of a union it tried ("str",
# "list[dict[str,any]]", "function-after[...]"): not fields, so not part of `param`.
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "bytes"})


def _is_union_tag(item: Any) -> bool:
    return isinstance(item, str) and (item in _UNION_TAGS or any(c in item for c in "[- "))


def param_from_loc(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """``("body", "messages", 0, "role")`` -> ``"messages[0].role"``."""
    parts: list[str] = []
    for item in loc:
        if item in ("body", "query", "path", "header") and not parts:
            continue
        if _is_union_tag(item):
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or None


def validation_message(errors: list[Any]) -> InvalidRequest:
    first = errors[0] if errors else {}
    param = param_from_loc(first.get("loc", ()))
    if param is not None:
        param = cap_text(param, PARAM_MAX_CHARS)[0]
    message = str(first.get("msg", "Invalid request."))
    text = f"Invalid value for '{param}': {message}" if param else message
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return InvalidRequest(text, param=param, code="invalid_value")


async def _orchestrator_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OrchestratorError)
    if exc.status >= 500:
        log.warning("request failed", extra={"error_type": exc.type, "code": exc.code, "status": exc.status})
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(validation_message(list(exc.errors())))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    # FastAPI wraps any failure while reading a body param as 400 "error parsing the body";
    # when the cause is our size limit, say so with its own status.
    if isinstance(exc.__cause__, OrchestratorError):
        return error_response(exc.__cause__)
    error: OrchestratorError
    if exc.status_code == 404:
        error = NotFound(f"No route for {request.method} {request.url.path}.", code="unknown_route")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}.")
        error.headers.update(exc.headers or {})
        allowed = _allowed_methods(request)
        if allowed:
            error.headers["Allow"] = allowed
    elif exc.status_code == 413:
        error = PayloadTooLarge(str(exc.detail))
    else:
        error = InvalidRequest(str(exc.detail), status=exc.status_code)
    return error_response(error)


def _allowed_methods(request: Request) -> str:
    """Every method the path takes. Starlette's ``Allow`` names only the first route whose path
    matched, and each method of a path is its own route here: ``PUT /v1/memory`` said
    ``Allow: GET`` although the path takes DELETE and POST too."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc, extra={"error_type": type(exc).__name__})
    return error_response(InternalError())


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OrchestratorError, _orchestrator_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
