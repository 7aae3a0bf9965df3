"""The one pure-ASGI middleware on every request.

In a single layer (each layer costs on the hot path) it:
* gives the request an id: the caller's ``X-Request-ID`` when it is sane and not credential-shaped,
  a new one otherwise, and returns it on every response, errors included;
* enforces ``ORCH_MAX_REQUEST_BYTES`` on the bytes actually read (chunked bodies included);
* appends headers that dependencies asked for (rate-limit headers) to whatever response is sent;
* measures the request and writes the access log line and the metrics, labelled by the route
  template (never the raw path).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import CallerLeft, InternalError, OrchestratorError, PayloadTooLarge
from app.ids import new_id
from app.observability.logging import ACCESS_LOGGER, get_logger
from app.observability.metrics import Metrics
from app.observability.otel import hide_raw_url, trace_headers
from app.scrub import find_secret

access_log = logging.getLogger(ACCESS_LOGGER)
log = get_logger("errors")

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_UNMATCHED = "<unmatched>"
# Probes: counted in neither metrics nor the INFO access log (they would drown both), unless the
# answer is a refused credential: guessing tokens on /metrics must show.
_PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})
_REFUSALS = frozenset({401, 403, 429})
# The method label takes these values and OTHER: a client must not grow the label set at will.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request the client abandoned

STATE_REQUEST_ID = "request_id"
STATE_EXTRA_HEADERS = "extra_headers"
STATE_PRINCIPAL = "principal"


def request_state(scope: Scope) -> dict[str, Any]:
    """The per-request state dict (``request.state`` in Starlette terms)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


def add_response_headers(scope: Scope, headers: dict[str, str]) -> None:
    """Ask the middleware to add ``headers`` to the response, whichever response it is."""
    request_state(scope).setdefault(STATE_EXTRA_HEADERS, []).extend(
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
    )


def _no_token(scope: Scope, value: str) -> bool:
    return False


def _template(scope: Scope) -> str:
    """The route template of the request (never its raw path), or ``<unmatched>``."""
    template = getattr(scope.get("route"), "path", None)
    if template is not None:
        return str(template)
    # Plain Starlette routes (the API description pages: /docs, /redoc, /openapi.json) leave no
    # route in the scope; none has a path parameter, so the path is the template.
    matched = scope.get("endpoint") is not None and not scope.get("path_params")
    return str(scope["path"]) if matched else _UNMATCHED


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_request_bytes: int,
        metrics: Metrics | None,
        otel: bool = False,
        is_token: Callable[[Scope, str], bool] = _no_token,
    ) -> None:
        """``is_token(scope, value)`` says whether ``value`` is one of the service's bearer tokens
        (owner, principals, approver): such an ``X-Request-ID`` is replaced, never echoed or logged."""
        self.app = app
        self.is_token = is_token
        self.max_request_bytes = max_request_bytes
        self.metrics = metrics
        self.otel = otel

    # One function on purpose: it runs on every request, and each call layer costs.
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: PLR0915
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = ""
        declared_length = -1
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                # A credential sent as a request id (a misconfigured client) would be logged and
                # echoed: it is replaced like any other unusable id. That includes this service's
                # own tokens, which need not look like credentials.
                if (
                    _SANE_REQUEST_ID.fullmatch(candidate)
                    and find_secret(candidate) is None
                    and not self.is_token(scope, candidate)
                ):
                    request_id = candidate
            elif name == b"content-length":
                try:
                    declared_length = int(value)
                except ValueError:
                    declared_length = -1
        if not request_id:
            request_id = new_id()
        state = request_state(scope)
        state[STATE_REQUEST_ID] = request_id
        request_id_header = (b"x-request-id", request_id.encode("latin-1"))
        status = 500
        otel = self.otel

        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append(request_id_header)
                headers.extend(state.get(STATE_EXTRA_HEADERS, ()))
                if otel:  # (called inside the OpenTelemetry middleware: its span is the current one)
                    headers.extend(trace_headers())
                    hide_raw_url(_template(scope))
                message["headers"] = headers
            await send(message)

        limit = self.max_request_bytes
        if declared_length > limit:
            status = PayloadTooLarge.status
            await self._send_error(
                send_wrapper,
                PayloadTooLarge(
                    f"Request body of {declared_length} bytes exceeds the limit of {limit} bytes "
                    "(ORCH_MAX_REQUEST_BYTES)."
                ),
            )
        else:
            received = 0

            async def receive_wrapper() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise PayloadTooLarge(
                            f"Request body exceeds the limit of {limit} bytes (ORCH_MAX_REQUEST_BYTES)."
                        )
                return message

            try:
                await self.app(scope, receive_wrapper, send_wrapper)
            except ClientDisconnect:
                # The client left before sending its whole body: nobody to answer, and not our
                # error. Recorded as 499 (a client-side outcome), logged without a traceback.
                status = CLIENT_CLOSED_REQUEST
                log.info("client disconnected before its request was read", extra={"request_id": request_id})
            except CallerLeft:
                # The client left while its answer was being made, and the upstream call was stopped.
                status = CLIENT_CLOSED_REQUEST
                log.info("client disconnected before its answer", extra={"request_id": request_id})
            except Exception as exc:
                # Handled here rather than by Starlette's outer ServerErrorMiddleware so that the
                # 500 carries the request id like every other response.
                log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
                if response_started:
                    raise  # mid-body: nothing sane can be sent; let the server drop the connection
                status = 500
                await self._send_error(send_wrapper, InternalError())
            finally:
                self._record(scope, status, started, request_id)
            return
        self._record(scope, status, started, request_id)

    @staticmethod
    async def _send_error(send: Send, error: OrchestratorError) -> None:
        body = error.body()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if isinstance(error, PayloadTooLarge):
            headers.append((b"connection", b"close"))  # the unread body is not worth draining
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _record(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        elapsed = time.perf_counter() - started
        template = _template(scope)
        method = scope["method"]
        if method not in _METHODS:
            method = "OTHER"
        probe = scope["path"] in _PROBE_PATHS and status not in _REFUSALS
        if self.metrics is not None and not probe:
            self.metrics.observe_request(template, method, status, elapsed)
        level = 10 if probe else 20  # DEBUG for probes, INFO otherwise
        if not access_log.isEnabledFor(level):
            return
        principal = scope.get("state", {}).get(STATE_PRINCIPAL)
        access_log.log(
            level,
            "request",
            extra={
                "request_id": request_id,
                "route": template,
                "method": method,
                "status": status,
                "latency_ms": round(elapsed * 1000, 3),
                "principal": principal,
            },
        )
