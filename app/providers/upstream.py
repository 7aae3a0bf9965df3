"""One pooled HTTP client per upstream, with the network gate, retries, the breaker and error mapping.

aiohttp is the transport: measured here, a relay on aiohttp's client reaches 0.41-0.52 of a bare
relay where httpx's default transport reaches 0.06 (DESIGN.md, convention 5). httpx stays in the
tests and tools.

Retries happen only before anything reached our client: for a stream, before the upstream's
response headers are accepted. Timeouts are per attempt and mean "no byte for N seconds" (aiohttp's
``sock_read``), so a long generation that keeps streaming never times out, and a silent upstream
does after ``ORCH_LLM_TIMEOUT_SEC``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from app.errors import (
    OrchestratorError,
    ProviderError,
    ProviderTimeout,
    ServiceUnavailable,
    UpstreamRejected,
)
from app.observability.logging import get_logger
from app.providers.resilience import (
    RETRYABLE_STATUSES,
    CircuitBreaker,
    RetryPolicy,
    parse_retry_after,
)
from app.scrub import REDACTED, redact_secrets

log = get_logger("providers")

MAX_CONNECTIONS = 256  # pooled connections per upstream; a local model server rarely wants more
CONNECT_TIMEOUT_CAP_SEC = 10.0  # connecting should be fast even when generation is slow
_MESSAGE_CHARS = 500  # how much of an upstream error message is passed on
# What parsing valid JSON of an unexpected shape raises (orjson's decode error is a ValueError):
# the upstream's fault (502 provider_bad_response), never ours (500).
_SHAPE_ERRORS = (AttributeError, TypeError, ValueError, KeyError, IndexError)


def is_loopback(url: str) -> bool:
    """Whether the URL points at this machine (a literal loopback address or ``localhost``)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def text_content(value: Any) -> str | None:
    """A message's text content; anything else raises (a bad answer, inside ``Upstream.parsing``)."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError("content is not text")


def upstream_message(body: bytes, status: int) -> tuple[str, dict[str, Any]]:
    """The upstream's error message (and its OpenAI error fields when it sent an envelope)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return (text[:_MESSAGE_CHARS] or f"HTTP {status}"), {}
    if isinstance(data, dict):
        error = data.get("error", data.get("detail"))
        if isinstance(error, dict):
            message = str(error.get("message") or f"HTTP {status}")
            fields = {k: error[k] for k in ("type", "code", "param") if error.get(k) is not None}
            return message[:_MESSAGE_CHARS], fields
        if error is not None:
            return str(error)[:_MESSAGE_CHARS], {}
    return f"HTTP {status}", {}


async def iter_line_batches(response: aiohttp.ClientResponse) -> AsyncIterator[list[bytes]]:
    """The body's complete lines (without the newline), grouped by the network read they came in.

    aiohttp's own line iterator refuses lines over 128 KiB (a large tool-call argument in one
    event would break the stream); splitting the raw chunks ourselves has no such limit.
    """
    pending = b""
    async for data in response.content.iter_any():
        pending += data
        if b"\n" not in data:
            continue
        *lines, pending = pending.split(b"\n")
        yield [line.rstrip(b"\r") for line in lines]
    if pending:
        yield [pending.rstrip(b"\r")]


@dataclass(slots=True)
class _Relaying:
    finished: bool = False  # the upstream said the stream is complete


@dataclass(slots=True)
class Attempted:
    """An accepted upstream response and how many attempts it took."""

    response: aiohttp.ClientResponse
    attempts: int
    started: float  # perf_counter at the first attempt


class Upstream:
    """HTTP access to one model server."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: dict[str, str] | None = None,
        timeout: float,
        health_timeout: float,
        retry: RetryPolicy,
        breaker: CircuitBreaker,
        network_enabled: bool,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.headers = headers or {}
        self.timeout = timeout
        self.health_timeout = health_timeout
        self.retry = retry
        self.breaker = breaker
        self.network_allowed = network_enabled or is_loopback(base_url)
        self._session: aiohttp.ClientSession | None = None
        # Our credentials for the upstream, longest first: an upstream may quote them back in an
        # error message, which is passed on to the caller.
        values = {value for value in self.headers.values() if value}
        values |= {value.split(" ", 1)[1] for value in values if " " in value}
        self._secrets = sorted((value for value in values if len(value) >= 4), key=len, reverse=True)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=min(self.timeout, CONNECT_TIMEOUT_CAP_SEC), sock_read=self.timeout
                ),
                headers=self.headers,
                auto_decompress=True,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def check_network(self) -> None:
        if not self.network_allowed:
            raise ServiceUnavailable(
                f"The {self.provider} upstream is not on this machine and outbound calls are off; "
                "set ORCH_LLM_NETWORK_ENABLED=1 to allow it.",
                code="network_disabled",
            )

    async def send(self, method: str, path: str, body: bytes | None = None) -> Attempted:
        """Send with retries; return an accepted (2xx) response the caller must read and release."""
        self.check_network()
        url = self.base_url + path
        headers = {"Content-Type": "application/json"} if body is not None else None
        started = time.perf_counter()
        attempt = 0
        while True:
            self.breaker.before_call()
            retry_after: float | None = None
            try:
                # Never follow a redirect: it could lead off this machine past the network gate.
                response = await self.session.request(method, url, data=body, headers=headers, allow_redirects=False)
            except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
                if not isinstance(exc, aiohttp.ConnectionTimeoutError):
                    # The upstream took the request and went silent: retrying would double its load.
                    self._failed(exc)
                    raise ProviderTimeout(
                        f"The model did not answer within {self.timeout:g} s (raise ORCH_LLM_TIMEOUT_SEC)."
                    ) from None
                self._failed(exc)
                failure: OrchestratorError = self._unreachable(exc)
            except aiohttp.ClientError as exc:
                self._failed(exc)
                failure = self._unreachable(exc)
            else:
                if 200 <= response.status < 300:
                    # The breaker's verdict waits for the body (read_body, relaying, get_json): an
                    # upstream that sends headers and then goes silent is failing, not healthy.
                    return Attempted(response, attempt + 1, started)
                failure, retry_after = await self._refused(response)
                if response.status not in RETRYABLE_STATUSES:
                    raise failure
            delay = self.retry.delay(attempt, retry_after)
            if delay is None:
                raise failure
            attempt += 1
            log.info(
                "retrying upstream",
                extra={"provider": self.provider, "attempt": attempt + 1, "delay_s": round(delay, 3)},
            )
            await asyncio.sleep(delay)

    def _unreachable(self, exc: BaseException) -> ProviderError:
        return ProviderError(
            f"The {self.provider} upstream is unreachable ({type(exc).__name__}).",
            code="provider_unreachable",
        )

    def _failed(self, exc: BaseException) -> None:
        self.breaker.record_failure()
        log.warning("upstream call failed", extra={"provider": self.provider, "error_type": type(exc).__name__})

    async def _refused(self, response: aiohttp.ClientResponse) -> tuple[OrchestratorError, float | None]:
        """Map a non-2xx answer to our error; the body is read and the connection released."""
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            raw = b""
        finally:
            response.release()
        status = response.status
        message, fields = upstream_message(raw, status)
        message = self.clean(message)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status < 400:
            self.breaker.record_success()  # it answered: the upstream is alive, but not as a model server
            return ProviderError(
                f"The {self.provider} upstream answered HTTP {status} instead of a result (redirects are not "
                "followed: point the base URL at the final address).",
                code="upstream_redirect" if 300 <= status < 400 else "provider_bad_response",
            ), None
        if status >= 500:
            self.breaker.record_failure()
            return ProviderError(
                f"The {self.provider} upstream failed with HTTP {status}: {message}",
                code=f"upstream_{status}",
            ), retry_after
        self.breaker.record_success()  # it answered: the upstream is alive
        if status in (401, 403):
            # Our credentials for the upstream are wrong: that is our configuration, not the caller's.
            return ProviderError(
                f"The {self.provider} upstream refused our credentials (HTTP {status}); check ORCH_OPENAI_API_KEY.",
                code="upstream_auth_failed",
            ), None
        error = UpstreamRejected(
            message,
            status=status,
            code=str(fields.get("code") or "upstream_error"),
            param=fields.get("param"),
        )
        if status == 429:
            error.type = "rate_limit_error"
            if retry_after is not None:
                error.headers["Retry-After"] = str(max(1, round(retry_after)))
        return error, retry_after

    def bad_answer(self, what: str) -> ProviderError:
        return ProviderError(
            f"The {self.provider} upstream sent an unexpected answer ({what}).", code="provider_bad_response"
        )

    @contextmanager
    def parsing(self, what: str) -> Iterator[None]:
        """Around reading an answer's JSON: a shape we did not expect is a bad answer (502)."""
        try:
            yield
        except _SHAPE_ERRORS:
            raise self.bad_answer(what) from None

    def clean(self, message: str) -> str:
        """An upstream's message as the caller may see it: our credentials and anything that
        looks like one replaced (the upstream may quote the request it refused)."""
        for secret in self._secrets:
            message = message.replace(secret, REDACTED)
        return redact_secrets(message)[0]

    def failed_mid_stream(self, message: str) -> ProviderError:
        return ProviderError(f"The {self.provider} upstream failed mid-stream: {self.clean(message[:_MESSAGE_CHARS])}")

    async def read_body(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body of an accepted response, with read failures mapped to our errors."""
        async with response:
            try:
                body = await response.read()
            except TimeoutError:
                self.breaker.record_failure()
                raise ProviderTimeout(f"The {self.provider} upstream stopped sending its answer.") from None
            except aiohttp.ClientError as exc:
                self.breaker.record_failure()
                raise ProviderError(
                    f"The {self.provider} upstream broke off its answer ({type(exc).__name__})."
                ) from None
        self.breaker.record_success()
        return body

    @contextmanager
    def relaying(self, response: aiohttp.ClientResponse) -> Iterator[_Relaying]:
        """Around reading a streamed answer: maps failures mid-stream to our errors, and at the end
        releases the connection, or closes it when the stream was abandoned (a client that went
        away, a cap reached, an error), which makes the upstream stop generating at once."""
        state = _Relaying()
        try:
            yield state
        except TimeoutError:
            self.breaker.record_failure()
            raise ProviderTimeout(f"The {self.provider} upstream went silent mid-stream.") from None
        except aiohttp.ClientError as exc:
            self.breaker.record_failure()
            raise ProviderError(f"The {self.provider} upstream broke off the stream ({type(exc).__name__}).") from None
        except BaseException:
            # No verdict on the upstream's health: we stopped reading (the client went away, a cap
            # was reached), or it answered in a way that is not a failure to reach it (an error
            # event, a malformed or unfinished stream). A half-open probe may be tried again.
            self.breaker.release_probe()
            raise
        else:
            self.breaker.record_success()
        finally:
            if state.finished:
                response.release()
            else:
                response.close()

    async def get_json(self, path: str) -> Any:
        """GET and parse JSON (model lists), with the same retries and mapping."""
        body = await self.read_body((await self.send("GET", path)).response)
        with self.parsing("not JSON"):
            return orjson.loads(body)

    async def probe(self, path: str) -> tuple[bool, str]:
        """A cheap health call for /ready, bounded by ORCH_LLM_HEALTH_TIMEOUT_SEC; never retried."""
        if not self.network_allowed:
            return False, "network_disabled"
        try:
            async with self.session.get(
                self.base_url + path, timeout=aiohttp.ClientTimeout(total=self.health_timeout), allow_redirects=False
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return True, "ok"
                return False, f"upstream_status_{response.status}"
        except (aiohttp.ClientError, TimeoutError):
            return False, "provider_unreachable"
