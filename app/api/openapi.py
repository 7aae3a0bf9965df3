"""OpenAPI (``/docs``) for routes that read their body by hand (see :mod:`app.api.body`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

REF_TEMPLATE = "#/components/schemas/{model}"


def install_openapi(app: FastAPI, body_models: list[type[BaseModel]]) -> None:
    """Generate the schema once, adding the hand-read request models to its components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in body_models:
            model_schema = model.model_json_schema(ref_template=REF_TEMPLATE)
            for name, definition in model_schema.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components[model.__name__] = model_schema
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
