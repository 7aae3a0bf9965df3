"""One pooled HTTP client per upstream, with the network gate, retries, the breaker and error mapping.

aiohttp is the transport: measured here, a relay on aiohttp's client reaches 0.41-0.52 of a bare
relay where httpx's default transport reaches 0.06 (DESIGN.md, convention 5). httpx stays in the
tests and tools.

Retries happen only before anything reached our client: for a stream, before the upstream's
response headers are accepted. Timeouts are per attempt and mean "no byte for N seconds" (aiohttp's
``sock_read``), so a long generation that keeps streaming never times out, and a silent upstream
does after ``ORCH_LLM_TIMEOUT_SEC``.

Everything read from the upstream is bounded: a whole answer, one line of a stream and an error
body each have a size cap (counted after decompression), and every field of an error that reaches
a caller, a log or a receipt is scrubbed and capped first.
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
    PARAM_MAX_CHARS,
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
    Ticket,
    parse_retry_after,
)
from app.scrub import REDACTED, cap_text, redact_secrets

log = get_logger("providers")

MAX_CONNECTIONS = 256  # pooled connections per upstream; a local model server rarely wants more
CONNECT_TIMEOUT_CAP_SEC = 10.0  # connecting should be fast even when generation is slow
_MESSAGE_CHARS = 500  # how much of an upstream error message is passed on
_CODE_CHARS = 64  # an error code is a short identifier ("context_length_exceeded")
# Upstream text is cut to this before it is cleaned (cleaning costs time on the event loop in
# proportion to the text), then cut again to its field's cap, which is far shorter: a credential
# that straddles this first cut lies past the second one, so no part of it is kept.
_CLEAN_CHARS = 16 * 1024
# Size caps on what is read from an upstream, in bytes after decompression (a gzip bomb is
# counted by what it expands to); reading stops at the cap. Read whole, one 200 MB body, or a
# gzip bomb of a megabyte, would cost the process several times its size in memory. A whole
# answer is held in memory to be parsed, so it is capped at a size well above a long local-model
# reply (128k tokens of text is ~0.5 MB; JSON escaping can multiply that by six) or a large tool
# call.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
# One line of a stream (an SSE `data:` event, an Ollama NDJSON line): one delta, usually a few
# hundred bytes, but a server may send a whole tool call's arguments in one event.
MAX_LINE_BYTES = 8 * 1024 * 1024
# Of an error body only _MESSAGE_CHARS characters of its message (and a code and a param) are
# kept, but they may sit in an envelope whose fields quote a long request: up to this much is
# parsed, the rest never read (and the connection closed instead of reused).
MAX_ERROR_BODY_BYTES = 1024 * 1024
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
    """The upstream's error message (and its OpenAI error fields when it sent an envelope), as it
    sent them: :meth:`Upstream.error_fields` is what scrubs and caps them for anyone to see."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return (text or f"HTTP {status}"), {}
    if isinstance(data, dict):
        error = data.get("error", data.get("detail"))
        if isinstance(error, dict):
            message = str(error.get("message") or f"HTTP {status}")
            fields = {k: error[k] for k in ("type", "code", "param") if error.get(k) is not None}
            return message, fields
        if error is not None:
            return str(error), {}
    return f"HTTP {status}", {}


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the (decompressed) body, and whether there was more. The caller
    closes the connection when there was: the rest is never read."""
    chunks: list[bytes] = []
    size = 0
    while data := await response.content.readany():
        if size + len(data) > limit:
            chunks.append(data[: limit - size])
            return b"".join(chunks), True
        size += len(data)
        chunks.append(data)
    return b"".join(chunks), False


@dataclass(slots=True)
class _Relaying:
    ticket: Ticket
    finished: bool = False  # the upstream said the stream is complete


@dataclass(slots=True)
class Attempted:
    """An accepted upstream response and how many attempts it took."""

    response: aiohttp.ClientResponse
    attempts: int
    started: float  # perf_counter at the first attempt
    ticket: Ticket  # the request's pass through the breaker: its verdict waits for the body


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
        """Send with retries; return an accepted (2xx) response the caller must read and release
        (through :meth:`read_body` or :meth:`relaying`, which give the breaker its verdict)."""
        self.check_network()
        ticket = self.breaker.admit()
        try:
            # A half-open probe has the request timeout to answer, retries included.
            async with asyncio.timeout(ticket.remaining()):
                return await self._attempts(ticket, method, path, body)
        except TimeoutError:
            if not ticket.overdue():
                ticket.release()
                raise
            ticket.failure()
            raise self._probe_timeout() from None
        except BaseException:
            ticket.release()  # the caller left (or a bug): no verdict, unless one was given
            raise

    async def _attempts(self, ticket: Ticket, method: str, path: str, body: bytes | None) -> Attempted:
        url = self.base_url + path
        headers = {"Content-Type": "application/json"} if body is not None else None
        started = time.perf_counter()
        attempt = 0
        while True:
            retry_after: float | None = None
            alive = False  # whether the upstream answered at all (a 4xx is an answer)
            retryable = True
            try:
                # Never follow a redirect: it could lead off this machine past the network gate.
                response = await self.session.request(method, url, data=body, headers=headers, allow_redirects=False)
            except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
                if not isinstance(exc, aiohttp.ConnectionTimeoutError):
                    # The upstream took the request and went silent: retrying would double its load.
                    self._log_failure(exc)
                    ticket.failure()
                    raise ProviderTimeout(
                        f"The model did not answer within {self.timeout:g} s (raise ORCH_LLM_TIMEOUT_SEC)."
                    ) from None
                self._log_failure(exc)
                failure: OrchestratorError = self._unreachable(exc)
            except aiohttp.ClientError as exc:
                self._log_failure(exc)
                failure = self._unreachable(exc)
            else:
                if 200 <= response.status < 300:
                    # The breaker's verdict waits for the body (read_body, relaying, get_json): an
                    # upstream that sends headers and then goes silent is failing, not healthy.
                    return Attempted(response, attempt + 1, started, ticket)
                failure, retry_after = await self._refused(response)
                alive = response.status < 500
                retryable = response.status in RETRYABLE_STATUSES
            delay = self.retry.delay(attempt, retry_after) if retryable else None
            if delay is None:
                # One verdict for the whole request, from its last attempt: its own retries must
                # not open the circuit under it.
                if alive:
                    ticket.success()
                else:
                    ticket.failure()
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

    def _probe_timeout(self) -> ProviderTimeout:
        return ProviderTimeout(
            f"The {self.provider} upstream did not answer within {self.timeout:g}s (ORCH_LLM_TIMEOUT_SEC); "
            "this request was the circuit breaker's probe, which is bounded by it."
        )

    def _log_failure(self, exc: BaseException) -> None:
        log.warning("upstream call failed", extra={"provider": self.provider, "error_type": type(exc).__name__})

    async def _refused(self, response: aiohttp.ClientResponse) -> tuple[OrchestratorError, float | None]:
        """Map a non-2xx answer to our error; the body is read (up to its cap) and the connection
        released. The breaker's verdict is the caller's (alive below 500)."""
        raw = await self.read_error_body(response)
        status = response.status
        message, fields = self.error_fields(raw, status)
        # Only a number of ours derived from it is passed on, never the header's text.
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status < 400:
            return ProviderError(
                f"The {self.provider} upstream answered HTTP {status} instead of a result (redirects are not "
                "followed: point the base URL at the final address).",
                code="upstream_redirect" if 300 <= status < 400 else "provider_bad_response",
            ), None
        if status >= 500:
            return ProviderError(
                f"The {self.provider} upstream failed with HTTP {status}: {message}",
                code=f"upstream_{status}",
            ), retry_after
        if status in (401, 403):
            # Our credentials for the upstream are wrong: that is our configuration, not the caller's.
            return ProviderError(
                f"The {self.provider} upstream refused our credentials (HTTP {status}); check ORCH_OPENAI_API_KEY.",
                code="upstream_auth_failed",
            ), None
        error = UpstreamRejected(
            message,
            status=status,
            code=fields.get("code") or "upstream_error",
            param=fields.get("param"),
        )
        if status == 429:
            error.type = "rate_limit_error"
            if retry_after is not None:
                error.headers["Retry-After"] = str(max(1, round(retry_after)))
        return error, retry_after

    async def read_error_body(self, response: aiohttp.ClientResponse) -> bytes:
        """The start of a body read only for its error message: at most MAX_ERROR_BODY_BYTES, within
        the request timeout in all (a body that drips a byte a second would otherwise hold the
        request for as long as it likes); the connection is released, or closed if not read to
        its end."""
        raw, whole = b"", False
        try:
            async with asyncio.timeout(self.timeout):
                raw, more = await read_capped(response, MAX_ERROR_BODY_BYTES)
            whole = not more
        except (aiohttp.ClientError, TimeoutError):
            pass
        finally:
            if whole:
                response.release()
            else:
                response.close()
        return raw

    def error_fields(self, raw: bytes, status: int) -> tuple[str, dict[str, str]]:
        """An upstream error's message and its ``type``/``code``/``param`` as a caller, a log or a
        receipt may see them: each made text, cleaned, then capped (cleaning first, so a cut never
        leaves the start of a credential behind)."""
        message, fields = upstream_message(raw, status)
        limits = {"type": _CODE_CHARS, "code": _CODE_CHARS, "param": PARAM_MAX_CHARS}
        cleaned = {}
        for key, value in fields.items():
            text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
            cleaned[key] = cap_text(self.clean(text[:_CLEAN_CHARS]), limits[key])[0]
        return cap_text(self.clean(message[:_CLEAN_CHARS]), _MESSAGE_CHARS)[0], cleaned

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
        """An upstream's text as the caller may see it: our credentials (the exact configured
        values, whatever their shape) and anything that looks like one replaced (the upstream may
        quote the request it refused)."""
        for secret in self._secrets:
            message = message.replace(secret, REDACTED)
        return redact_secrets(message)[0]

    def failed_mid_stream(self, message: str) -> ProviderError:
        text = cap_text(self.clean(message[:_CLEAN_CHARS]), _MESSAGE_CHARS)[0]
        return ProviderError(f"The {self.provider} upstream failed mid-stream: {text}")

    async def read_body(self, accepted: Attempted) -> bytes:
        """The whole body of an accepted response (at most MAX_ANSWER_BYTES), with read failures
        mapped to our errors and the breaker given its verdict."""
        response, ticket = accepted.response, accepted.ticket
        whole = False
        try:
            async with asyncio.timeout(ticket.remaining()):
                body, more = await read_capped(response, MAX_ANSWER_BYTES)
            if more:
                raise self.bad_answer(f"an answer over {MAX_ANSWER_BYTES // 2**20} MiB")
            whole = True
        except TimeoutError:
            overdue = ticket.overdue()
            ticket.failure()
            if overdue:
                raise self._probe_timeout() from None
            raise ProviderTimeout(f"The {self.provider} upstream stopped sending its answer.") from None
        except aiohttp.ClientError as exc:
            ticket.failure()
            raise ProviderError(f"The {self.provider} upstream broke off its answer ({type(exc).__name__}).") from None
        except BaseException:
            ticket.release()  # the caller left, or the answer was too large: no verdict on its health
            raise
        finally:
            if whole:
                response.release()
            else:
                response.close()
        ticket.success()
        return body

    async def line_batches(self, relaying: _Relaying, response: aiohttp.ClientResponse) -> AsyncIterator[list[bytes]]:
        """The body's complete lines (without the newline), grouped by the network read they came in.

        aiohttp's own line iterator refuses lines over 128 KiB (a large tool-call argument in one
        event would break the stream); splitting the raw chunks ourselves allows up to
        MAX_LINE_BYTES. A line in pieces is joined once, when it ends (linear in its size: adding
        each piece to the last would copy it all again). Until a half-open probe has its verdict,
        each read is bounded by the time the probe has left.
        """
        ticket = relaying.ticket
        content = response.content
        partial: list[bytes] = []  # the start of a line not ended yet
        partial_size = 0
        while True:
            remaining = ticket.remaining()
            if remaining is None:
                data = await content.readany()
            else:
                try:
                    async with asyncio.timeout(remaining):
                        data = await content.readany()
                except TimeoutError:
                    if not ticket.overdue():
                        raise  # aiohttp's own read timeout: no byte for ORCH_LLM_TIMEOUT_SEC
                    ticket.failure()
                    raise self._probe_timeout() from None
            if not data:
                break
            lines = data.split(b"\n")
            rest = lines.pop()
            if not lines:  # no line ended in this read
                partial_size += len(rest)
                if partial_size > MAX_LINE_BYTES:
                    raise self._line_too_long()
                partial.append(rest)
                continue
            if partial:
                partial.append(lines[0])
                lines[0] = b"".join(partial)
                partial = []
            if partial_size + len(data) > MAX_LINE_BYTES and max(map(len, lines)) > MAX_LINE_BYTES:
                raise self._line_too_long()
            partial_size = len(rest)
            if rest:
                if partial_size > MAX_LINE_BYTES:
                    raise self._line_too_long()
                partial.append(rest)
            yield [line.rstrip(b"\r") for line in lines]
        if partial:
            yield [b"".join(partial).rstrip(b"\r")]

    def _line_too_long(self) -> ProviderError:
        return self.bad_answer(f"a stream line over {MAX_LINE_BYTES // 2**20} MiB")

    @contextmanager
    def relaying(self, accepted: Attempted) -> Iterator[_Relaying]:
        """Around reading a streamed answer: maps failures mid-stream to our errors, gives the
        breaker its verdict, and at the end releases the connection, or closes it when the stream
        was abandoned (a client that went away, a cap reached, an error), which makes the upstream
        stop generating at once."""
        response, ticket = accepted.response, accepted.ticket
        state = _Relaying(ticket)
        try:
            yield state
        except TimeoutError:
            ticket.failure()
            raise ProviderTimeout(f"The {self.provider} upstream went silent mid-stream.") from None
        except aiohttp.ClientError as exc:
            ticket.failure()
            raise ProviderError(f"The {self.provider} upstream broke off the stream ({type(exc).__name__}).") from None
        except BaseException:
            # No verdict on the upstream's health: we stopped reading (the client went away, a cap
            # was reached), or it answered in a way that is not a failure to reach it (an error
            # event, a malformed, oversized or unfinished stream). A half-open probe may be tried
            # again.
            ticket.release()
            raise
        else:
            ticket.success()
        finally:
            if state.finished:
                response.release()
            else:
                response.close()

    async def get_json(self, path: str) -> Any:
        """GET and parse JSON (model lists), with the same retries and mapping."""
        body = await self.read_body(await self.send("GET", path))
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
                # Only the status matters: the body is drained up to a small cap so that the
                # connection can be reused (closed on leaving the block if it was not read whole).
                await read_capped(response, MAX_ERROR_BODY_BYTES)
                if 200 <= response.status < 300:
                    return True, "ok"
                return False, f"upstream_status_{response.status}"
        except (aiohttp.ClientError, TimeoutError):
            return False, "provider_unreachable"
