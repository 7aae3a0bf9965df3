"""OpenAPI (``/docs``): hand-read request bodies, plain Starlette routes, and the bearer scheme.

Routes that read their body by hand (see :mod:`app.api.body`) or are plain Starlette routes (the
chat route) are not described by FastAPI itself; their models and operations are added here, and a
bearer security scheme makes ``/docs`` usable as a playground (*Authorize*, paste the token).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

REF_TEMPLATE = "#/components/schemas/{model}"
# Routes anyone may call: no lock icon in /docs.
PUBLIC_PATHS = frozenset({"/health", "/ready"})


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(BaseModel):
    """Every error, whatever its status: the OpenAI error envelope."""

    error: ErrorDetail


_ERROR_CONTENT = {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="ErrorEnvelope")}}}
_INVALID = {"description": "Invalid request (`param` names the field).", "content": _ERROR_CONTENT}
_UNAUTHENTICATED = {"description": "Missing or invalid bearer token.", "content": _ERROR_CONTENT}
# What every route behind the bearer can answer, whatever it does: the other credential (an
# approver's token on a caller route, a caller's on an approver route, ...), the rate limit, and
# the kill switch or a database outage.
_AUTHENTICATED_ERRORS = {
    "403": "This credential may not use this route (see `code`).",
    "429": "Rate limited (`Retry-After`).",
    "503": "The API is disabled, the feature is off, or a database is unavailable (see `code`).",
}
_BODY_ERRORS = {
    "413": "The body is over ORCH_MAX_REQUEST_BYTES.",
    "415": "A body sent with a `Content-Encoding` other than identity (compressed or not).",
}
NOT_FOUND = {"description": "No such resource (see `code`)."}
CONFLICT = {"description": "The resource is no longer in a state that allows this (see `code`)."}


def _document_errors(operation: dict[str, Any], *, public: bool) -> None:
    """FastAPI documents its own 422 validation body; the service answers 400 with the envelope.
    The statuses every route can answer are added here, so that the schema lists what is sent."""
    responses = operation.setdefault("responses", {})
    if responses.pop("422", None) is not None or "requestBody" in operation:
        responses.setdefault("400", _INVALID)
    if not public:
        responses.setdefault("401", _UNAUTHENTICATED)
        for status, description in _AUTHENTICATED_ERRORS.items():
            responses.setdefault(status, {"description": description})
    if "requestBody" in operation:
        for status, description in _BODY_ERRORS.items():
            responses.setdefault(status, {"description": description})
    if any(parameter.get("in") == "path" for parameter in operation.get("parameters", ())):
        responses.setdefault("404", dict(NOT_FOUND))
    for status, response in responses.items():
        if not status.startswith("2"):
            response.setdefault("content", _ERROR_CONTENT)  # every error is the envelope


def response_ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def body_ref(model: type[BaseModel]) -> dict[str, Any]:
    """A required JSON request body of ``model``."""
    return {"required": True, "content": {"application/json": {"schema": response_ref(model)}}}


def json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` that documents ``model`` as the JSON request body of a FastAPI route."""
    return {"requestBody": body_ref(model)}


def install_openapi(
    app: FastAPI, models: list[type[BaseModel]], extra_paths: dict[str, dict[str, Any]] | None = None
) -> None:
    """Generate the schema once: FastAPI's, plus ``models``, ``extra_paths`` and the bearer scheme."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        documented: list[type[BaseModel]] = [*models, ErrorEnvelope]
        for model in documented:
            model_schema = model.model_json_schema(ref_template=REF_TEMPLATE)
            for name, definition in model_schema.pop("$defs", {}).items():
                schemas.setdefault(name, definition)
            schemas[model.__name__] = model_schema
        paths = schema.setdefault("paths", {})
        for path, operations in (extra_paths or {}).items():
            paths.setdefault(path, {}).update(operations)
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in paths.items():
            for operation in operations.values():
                public = path in PUBLIC_PATHS
                operation["security"] = [] if public else [{"bearer": []}]
                _document_errors(operation, public=public)
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
