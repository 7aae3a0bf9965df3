"""A scriptable OpenAI-compatible upstream: a real HTTP server (aiohttp) on a local port.

Fault tests use it instead of mocking the client: each request takes the next :class:`Reply`
from the script (the last one repeats), and every request body is recorded. A reply can be a
status with a body, a hang, a stream that drips, resets or runs until the client leaves, and the
hostile ones: an error that quotes our credentials, keep-alives forever, bodies, lines and gzip
bombs of hundreds of megabytes. ``/api/chat`` speaks Ollama's NDJSON stream.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

COMMENT_INTERVAL = 0.2  # between SSE comments: a closed connection is noticed at the next one
GONE_POLL = 0.02  # how often a delayed answer checks that its client is still there

MODELS = {
    "object": "list",
    "data": [{"id": "fake-model", "object": "model", "created": 1700000000, "owned_by": "fake"}],
}


def completion(content: str = "Hello from the fake upstream.", **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    message.update(extra.pop("message", {}))
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake-model",
        "choices": [{"index": 0, "message": message, "finish_reason": extra.pop("finish_reason", "stop")}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
    }
    body.update(extra)
    return body


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def text_chunks(words: list[str]) -> list[dict[str, Any]]:
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": word}) for word in words]
    chunks.append(chunk({}, "stop"))
    usage = chunk({})
    usage["choices"] = []
    usage["usage"] = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
    chunks.append(usage)
    return chunks


@dataclass
class Reply:
    """What the fake does with one request."""

    status: int = 200
    body: Any = None  # dict -> JSON; bytes/str as is; None -> a default completion
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer
    stream: list[Any] | None = None  # SSE events (JSON values), then [DONE]
    delay: float = 0.0  # before answering / between stream events
    # A stream that sends only SSE comments for this many seconds, after `comments_after` events,
    # then goes on with the rest.
    comments_for: float = 0.0
    comments_after: int = 0
    reset_after: int | None = None  # abort the connection after this many events
    endless: bool = False  # keep streaming until the client goes away
    done: bool = True  # end a stream with [DONE] (False: just close it)
    stall: bool = False  # send the headers and part of the body, then nothing
    # Hostile upstreams (each one a real misbehaviour; the sizes are generated as they are sent,
    # never held in memory here):
    echo_auth: bool = False  # answer `status` with the request's Authorization header in every error field
    keepalive: float | None = None  # an event stream of SSE comments every this many seconds, forever
    drip: float | None = None  # an event stream that sends one byte every this many seconds, forever
    big_body: int = 0  # a body of this many bytes (with `status`): a completion whose content never ends
    gzip_bomb: int = 0  # a gzip body (with `status`) that expands to this many bytes
    huge_line: int = 0  # after the `stream` events, one SSE event of this many bytes


_PIECE = 1024 * 1024  # hostile bodies go out in pieces of this size
_BIG_PREFIX = b'{"id": "chatcmpl-fake", "choices": [{"index": 0, "message": {"role": "assistant", "content": "'
_BOMBS: dict[int, bytes] = {}


def gzip_bomb(size: int) -> bytes:
    """A gzip body that expands to ``size`` bytes (a JSON completion padded with spaces)."""
    if size not in _BOMBS:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
        parts = [packer.compress(_BIG_PREFIX)]
        blank = b" " * _PIECE
        for _ in range(size // _PIECE):
            parts.append(packer.compress(blank))
        parts.append(packer.compress(b'"}}]}') + packer.flush())
        _BOMBS[size] = b"".join(parts)
    return _BOMBS[size]


async def write_repeated(response: web.StreamResponse, prefix: bytes, size: int, suffix: bytes) -> None:
    """``prefix``, ``size`` bytes of ``x``, ``suffix``: written piece by piece, never built whole."""
    piece = b"x" * _PIECE
    await response.write(prefix)
    sent = 0
    while sent < size:
        await response.write(piece[: size - sent])
        sent += min(_PIECE, size - sent)
    await response.write(suffix)


@dataclass
class FakeUpstream:
    script: list[Reply] = field(default_factory=lambda: [Reply()])
    requests: list[dict[str, Any]] = field(default_factory=list)
    model_requests: int = 0
    models_body: bytes | None = None  # what /models answers (None: MODELS)
    disconnected_at: float | None = None
    url: str = ""
    authorizations: list[str | None] = field(default_factory=list)  # the Authorization header of each chat request
    hostile_ended: list[str] = field(default_factory=list)  # how each hostile reply ended: "sent" or "cut"

    def next_reply(self) -> Reply:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(orjson.loads(await request.read()))
        self.authorizations.append(request.headers.get("Authorization"))
        reply = self.next_reply()
        if reply.echo_auth or reply.keepalive or reply.drip or reply.big_body or reply.gzip_bomb or reply.huge_line:
            return await self.hostile(request, reply)
        if reply.hang:
            await asyncio.sleep(3600)
        if reply.delay and reply.stream is None and not await self.client_stays(request, reply.delay):
            return web.Response(status=499)  # nobody to send it to
        if reply.stall:
            stalled = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            stalled.content_length = 1000
            await stalled.prepare(request)
            await stalled.write(b'{"id": "chatcmpl-fake", ')
            await asyncio.sleep(3600)
        if reply.stream is None and not reply.endless:
            body = reply.body if reply.body is not None else completion()
            data = (
                orjson.dumps(body)
                if isinstance(body, dict | list)
                else (body.encode() if isinstance(body, str) else body)
            )
            return web.Response(
                status=reply.status, body=data, headers={"Content-Type": "application/json", **reply.headers}
            )
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events = reply.stream or []
        sent = 0
        try:
            while True:
                if reply.comments_for and sent == reply.comments_after:
                    until = time.monotonic() + reply.comments_for
                    while time.monotonic() < until:
                        await response.write(b": keep-alive\n\n")
                        await asyncio.sleep(COMMENT_INTERVAL)
                if reply.endless:
                    event: dict[str, Any] | None = chunk({"content": f"w{sent} "})
                else:
                    event = events[sent] if sent < len(events) else None
                if event is None:
                    if reply.done:
                        await response.write(b"data: [DONE]\n\n")
                    break
                if reply.reset_after is not None and sent >= reply.reset_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
                sent += 1
                if reply.delay:
                    await asyncio.sleep(reply.delay)
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnected_at = time.monotonic()
            raise
        return response

    async def hostile(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.echo_auth:
            # An upstream that quotes the request it refused, headers and all, at length.
            echoed = str(request.headers.get("Authorization"))
            padding = "p" * 200_000
            error = {
                "message": f"Invalid header Authorization: {echoed} {padding}",
                "type": f"{echoed} {padding}",
                "param": f"{echoed} {padding}",
                "code": f"{echoed} {padding}",
            }
            return web.json_response({"error": error}, status=reply.status)
        streamed = reply.keepalive or reply.drip or reply.huge_line
        response = web.StreamResponse(
            status=reply.status,
            headers={"Content-Type": "text/event-stream" if streamed else "application/json", **reply.headers},
        )
        if reply.gzip_bomb:
            response.headers["Content-Encoding"] = "gzip"
        await response.prepare(request)
        try:
            if reply.keepalive:
                while True:
                    await response.write(b": keep-alive\n\n")
                    await asyncio.sleep(reply.keepalive)
            if reply.drip:
                while True:
                    for byte in b'data: {"choices": [{"delta": {"content": "':
                        await response.write(bytes([byte]))
                        await asyncio.sleep(reply.drip)
            if reply.huge_line:
                for event in reply.stream or []:
                    await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
                    await asyncio.sleep(reply.delay)
                prefix = b'data: {"choices": [{"index": 0, "delta": {"content": "'
                await write_repeated(response, prefix, reply.huge_line, b'"}}]}\n\ndata: [DONE]\n\n')
            elif reply.gzip_bomb:
                await response.write(gzip_bomb(reply.gzip_bomb))
            elif reply.big_body:
                await write_repeated(response, _BIG_PREFIX, reply.big_body, b'"}}]}')
            await response.write_eof()
        except ConnectionError:  # the reader hung up: what a capped reader should do
            self.hostile_ended.append("cut")
            self.disconnected_at = time.monotonic()
            return response
        except asyncio.CancelledError:
            self.hostile_ended.append("cut")
            self.disconnected_at = time.monotonic()
            raise
        self.hostile_ended.append("sent")
        return response

    async def ollama_chat(self, request: web.Request) -> web.StreamResponse:
        """Ollama's /api/chat streaming NDJSON: the `stream` events as lines, then a huge line if asked."""
        self.requests.append(orjson.loads(await request.read()))
        reply = self.next_reply()
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            for event in reply.stream or []:
                await response.write(orjson.dumps(event) + b"\n")
                await asyncio.sleep(reply.delay)
            if reply.huge_line:
                prefix = b'{"model": "fake-model", "message": {"role": "assistant", "content": "'
                await write_repeated(response, prefix, reply.huge_line, b'"}, "done": false}\n')
            await response.write(b'{"model": "fake-model", "message": {"content": ""}, "done": true}\n')
            await response.write_eof()
        except ConnectionError:
            self.hostile_ended.append("cut")
            return response
        except asyncio.CancelledError:
            self.hostile_ended.append("cut")
            raise
        self.hostile_ended.append("sent")
        return response

    async def models(self, request: web.Request) -> web.Response:
        self.model_requests += 1
        if self.models_body is not None:
            return web.Response(body=self.models_body, content_type="application/json")
        return web.json_response(MODELS)

    async def client_stays(self, request: web.Request, seconds: float) -> bool:
        """Wait ``seconds`` before answering; False (and ``disconnected_at`` set) as soon as the
        client closes the connection. (aiohttp does not cancel a handler when its client goes.)"""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if request.transport is None or request.transport.is_closing():
                self.disconnected_at = time.monotonic()
                return False
            await asyncio.sleep(GONE_POLL)
        return True


@asynccontextmanager
async def fake_upstream(*replies: Reply) -> AsyncIterator[FakeUpstream]:
    """Serve a FakeUpstream on 127.0.0.1:<free port> for the block; ``.url`` is its /v1 base URL."""
    fake = FakeUpstream(script=list(replies) or [Reply()])
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.chat)
    app.router.add_get("/v1/models", fake.models)
    app.router.add_post("/api/chat", fake.ollama_chat)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield fake
    finally:
        await runner.cleanup()
