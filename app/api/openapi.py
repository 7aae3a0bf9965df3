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
        for model in models:
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
                operation["security"] = [] if path in PUBLIC_PATHS else [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
