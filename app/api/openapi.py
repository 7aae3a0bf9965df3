"""OpenAPI (``/docs``, ``/redoc``): hand-read request bodies, plain Starlette routes, the bearer
scheme, and the pages themselves, served offline.

Routes that read their body by hand (see :mod:`app.api.body`) or are plain Starlette routes (the
chat route) are not described by FastAPI itself; their models and operations are added here, and a
bearer security scheme makes ``/docs`` usable as a playground (*Authorize*, paste the token). Each
request model carries an example (``json_schema_extra``), which becomes the playground's default
body.

FastAPI's own pages load Swagger UI and ReDoc from a CDN and ReDoc's fonts from Google: on a machine
without internet they stay blank. The assets come from the ``fastapi-offline`` package instead and
are served under :data:`DOCS_ASSETS`, so the pages need nothing but this service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
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


def request_example(model: type[BaseModel]) -> dict[str, Any] | None:
    """The first of ``model``'s examples (``json_schema_extra={"examples": [...]}``), if any."""
    extra = model.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    return examples[0] if isinstance(examples, list) and examples and isinstance(examples[0], dict) else None


def body_ref(model: type[BaseModel]) -> dict[str, Any]:
    """A required JSON request body of ``model``, with its example as the playground's default body
    (Swagger UI otherwise builds one from the schema: ``role: system``, ``content: null``)."""
    media: dict[str, Any] = {"schema": response_ref(model)}
    example = request_example(model)
    if example is not None:
        media["example"] = example
    return {"required": True, "content": {"application/json": media}}


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
    install_docs(app)


DOCS_ASSETS = "/docs/assets"
_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
# No request leaves for the online validator (Swagger UI's default validatorUrl). The token pasted
# into *Authorize* is not persisted (persistAuthorization would keep it in localStorage).
SWAGGER_UI_PARAMETERS = {"validatorUrl": None, "tryItOutEnabled": True}
# The pages may load nothing but this service: ReDoc's bundle shows the Redocly logo from its CDN
# whatever its options say (the browser refuses it, and ReDoc hides the image), and any other
# address baked into a bundle is refused the same way. Inline script and styles: the pages' own
# bootstrap script and ReDoc's generated styles; blob: workers: ReDoc's search index.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI), its OAuth2 redirect page, ``/redoc``, and their assets, all local.

    The app is built with ``docs_url=None, redoc_url=None`` so that FastAPI's CDN pages are not
    there. No auth: like ``/openapi.json``, they describe the routes, not any data."""
    assert app.openapi_url is not None and app.swagger_ui_oauth2_redirect_url is not None
    openapi_url, redirect_url = app.openapi_url, app.swagger_ui_oauth2_redirect_url
    app.mount(DOCS_ASSETS, StaticFiles(directory=_ASSETS_DIR), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + redirect_url,
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
        return _local_only(page)

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        return _local_only(page)

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(redirect_url, oauth2_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
