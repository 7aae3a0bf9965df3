"""The one error hierarchy of the service.

Services raise these; the API layer turns every one of them (and every framework error) into the
OpenAI error envelope ``{"error": {"message", "type", "param", "code"}}`` with the status code the
official SDK maps to its typed exceptions. Nothing here imports FastAPI.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from app.scrub import scrub_text

# A field path (``messages[0].role``) is short; a longer ``param`` is a key the caller made up
# (an unknown field, an unknown tool argument): echoed whole, an 800 kB key came back twice in a
# 1.6 MB error body, and into the receipt of a tool call.
PARAM_MAX_CHARS = 200


class OrchestratorError(Exception):
    """Base class: an HTTP status, an OpenAI error ``type`` and a short machine ``code``."""

    status: int = 500
    type: str = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.message = message
        self.code = code if code is not None else self.default_code
        self.param = param
        self.headers = headers or {}
        # Fields added next to "error" at the top level (e.g. memory_decision on a 502).
        self.extra = extra or {}

    def envelope(self) -> dict[str, Any]:
        # Messages and params quote what they are about (a model name, an argument, a field the
        # caller made up): scrubbed like every other text that leaves the service.
        param = None if self.param is None else scrub_text(self.param, pii=False)
        body: dict[str, Any] = {
            "error": {
                "message": scrub_text(self.message, pii=False),
                "type": self.type,
                "param": param,
                "code": self.code,
            }
        }
        body.update(self.extra)
        return body

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())


class InvalidRequest(OrchestratorError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(OrchestratorError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"

    def __init__(self, message: str = "Missing or invalid bearer token.", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class PermissionDenied(OrchestratorError):
    status = 403
    type = "permission_error"
    default_code = "forbidden"


class NotFound(OrchestratorError):
    status = 404
    type = "not_found_error"
    default_code = "not_found"


class MethodNotAllowed(OrchestratorError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class PayloadTooLarge(OrchestratorError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class UnsupportedMediaType(OrchestratorError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_content_encoding"


class RateLimited(OrchestratorError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class InternalError(OrchestratorError):
    status = 500
    type = "server_error"
    default_code = "internal_error"

    def __init__(self, message: str = "Internal server error.", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class ProviderError(OrchestratorError):
    """The upstream model server failed (unreachable, bad answer)."""

    status = 502
    type = "provider_error"
    default_code = "provider_error"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        # The gateway has retried what is worth retrying (ORCH_LLM_RETRY_COUNT); the OpenAI SDKs
        # retry a 502/504 twice more by default unless told not to, tripling the load on an
        # upstream that is failing or still working on the request.
        self.headers.setdefault("x-should-retry", "false")


class ServiceUnavailable(OrchestratorError):
    status = 503
    type = "service_unavailable"
    default_code = "service_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """A database the request needs cannot be reached (or answers too slowly)."""

    default_code = "database_unavailable"

    def __init__(self) -> None:
        super().__init__("A database this request needs is unavailable; try again shortly.")


class ProviderTimeout(ProviderError):
    status = 504
    default_code = "provider_timeout"


class CircuitOpen(ServiceUnavailable):
    """The provider's circuit breaker is open: failing fast instead of waiting on a dead upstream."""

    type = "circuit_open"
    default_code = "circuit_open"


class UpstreamRejected(OrchestratorError):
    """The upstream answered 4xx: its status and message are passed through."""

    type = "invalid_request_error"
    default_code = "upstream_error"


class CallerLeft(Exception):
    """The caller went away while its answer was being made: the work for it was stopped, and
    there is nobody to answer. Not an error of the service (the middleware records a 499)."""
