"""An Ollama native API (``/api/chat``, ``/api/tags``) in front of an OpenAI-compatible server.

The e2e suite has a real model behind llama.cpp's ``llama-server``, which speaks the OpenAI API.
This front speaks Ollama's own API over that model, so the gateway's ``ollama`` provider can be
driven against real generation offline: requests are translated to ``POST /v1/chat/completions``
and the answers back to Ollama's shapes. It is a real HTTP server (aiohttp), importable
(:class:`OllamaFront`, :func:`serve`) and runnable as a script::

    python -m tests.fakes.ollama_front --upstream http://127.0.0.1:8080/v1 --port 11434

Every ``/api/chat`` request body is recorded in :attr:`OllamaFront.requests`.

The shapes follow Ollama's documentation and source (looked up for this module):

- ``docs/api.md`` of ollama/ollama (commit 01e52d24bc00defcd9bcc6d995b11df0f08bc6f1), "Generate a
  chat completion": ``stream`` defaults to true; streamed objects are
  ``{"model", "created_at", "message": {"role": "assistant", "content"}, "done": false}``; the final
  one has ``done: true`` and the metrics ``total_duration``, ``load_duration``,
  ``prompt_eval_count``, ``prompt_eval_duration``, ``eval_count``, ``eval_duration`` (durations in
  nanoseconds, "Conventions"); ``stream: false`` gives one such object with the whole content;
  ``format`` is ``"json"`` or a JSON schema; ``options`` are the Modelfile parameters
  (``num_predict``, ``temperature``, ``top_p``, ``seed``, ``stop``, ...); "Chat request (with
  tools)": ``message.tool_calls = [{"function": {"name", "arguments": {...object...}}}]`` with
  ``done_reason: "stop"``; "List Local Models": ``GET /api/tags`` ->
  ``{"models": [{"name", "modified_at", "size", "digest", "details": {"format", "family",
  "families", "parameter_size", "quantization_level"}}]}``.
- ``api/types.go`` (ollama's ``ChatResponse``: ``done_reason`` next to ``done``; metrics
  ``omitempty``; ``ListModelResponse`` also carries ``model``, and ``details.parent_model``;
  ``Options.NumPredict`` default -1 = no limit).
- ``server/routes.go``: ``handleScheduleError`` answers 404
  ``{"error": "model \\"x\\" not found, try pulling it first"}``; ``streamResponse`` sends
  ``Content-Type: application/x-ndjson``, and an error before the first line as a JSON
  ``{"error": ...}`` with its status, after it as an ``{"error": ...}`` line; chat errors are
  ``{"error": "..."}`` with the status of the failure.
- https://ollama.com/blog/streaming-tool (2025-05-28): with ``stream: true`` tool calls arrive in
  their own chunk (``done: false``, ``content: ""``) before the final one.

Translation: ``options.num_predict`` (> 0) -> ``max_tokens``; ``temperature``, ``top_p``, ``seed``,
``stop``, ``presence_penalty``, ``frequency_penalty``, ``top_k``, ``min_p``, ``repeat_penalty`` as
is; ``format: "json"`` -> ``response_format: json_object``, a schema -> ``json_schema``; ``tools``
as is; ``finish_reason: "length"`` -> ``done_reason: "length"``, anything else -> ``"stop"``;
``usage`` -> ``prompt_eval_count``/``eval_count``; llama-server's ``timings`` -> the durations;
``logprobs``/``top_logprobs`` as is, and back a choice's ``logprobs.content`` entries as the
top-level ``logprobs`` list (Ollama's shape: the same ``token``/``logprob``/``bytes``/
``top_logprobs`` entries, ollama-python's ``chat(..., logprobs=True, top_logprobs=3)``).
Upstream errors come back as ``{"error": <upstream message>}`` with the upstream's status. A
client that goes away mid-stream closes the upstream request at once (the server cancels the
handler), so the model stops generating.

``upstream_extra`` (``--upstream-extra JSON``) is merged into every upstream request: a test knob
(e.g. ``{"ignore_eos": true}`` for a generation that runs to its limit), not an Ollama feature.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

NDJSON = "application/x-ndjson"
# Ollama's sampling options with the same name and meaning in llama-server's OpenAI API.
_SAME_OPTIONS = (
    "temperature",
    "top_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "top_k",
    "min_p",
    "repeat_penalty",
)
_MODELS_CACHE_SECONDS = 5.0


def now_iso() -> str:
    """``created_at`` as Ollama writes it (RFC 3339, UTC, sub-second)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def ollama_error(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status)


def upstream_error_message(raw: bytes, status: int) -> str:
    """llama-server's ``{"error": {"message": ...}}`` (or any text) as one message."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip() or f"upstream HTTP {status}"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or f"upstream HTTP {status}")
    if error is not None:
        return str(error)
    return f"upstream HTTP {status}"


def done_reason(finish_reason: str | None) -> str:
    return "length" if finish_reason == "length" else "stop"


def base_name(model: str) -> str:
    """``name:latest`` and ``name`` are the same model (Ollama's default tag)."""
    return model.removesuffix(":latest")


def parameter_size(n_params: Any) -> str:
    if not isinstance(n_params, int | float) or n_params <= 0:
        return ""
    if n_params >= 1e9:
        return f"{n_params / 1e9:.1f}B"
    return f"{round(n_params / 1e6)}M"


def to_openai_message(message: dict[str, Any]) -> dict[str, Any]:
    converted: dict[str, Any] = {"role": message.get("role", "user")}
    text = message.get("content") or ""
    images = message.get("images") or []
    if images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
        parts += [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}} for image in images]
        converted["content"] = parts
    else:
        converted["content"] = text
    calls = message.get("tool_calls") or []
    if calls:
        converted["tool_calls"] = [
            {
                "id": f"call_{index}",
                "type": "function",
                "function": {
                    "name": (call.get("function") or {}).get("name", ""),
                    "arguments": json.dumps((call.get("function") or {}).get("arguments") or {}),
                },
            }
            for index, call in enumerate(calls)
        ]
    if message.get("tool_name"):
        converted["name"] = message["tool_name"]
    return converted


def to_openai_request(body: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    options = body.get("options") or {}
    payload: dict[str, Any] = {
        "model": body["model"],
        "messages": [to_openai_message(m) for m in body.get("messages") or []],
    }
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and num_predict > 0:  # -1: no limit, -2: fill the context
        payload["max_tokens"] = num_predict
    for key in _SAME_OPTIONS:
        if options.get(key) is not None:
            payload[key] = options[key]
    fmt = body.get("format")
    if fmt == "json":
        payload["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        payload["response_format"] = {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    if body.get("tools"):
        payload["tools"] = body["tools"]
    for key in ("logprobs", "top_logprobs"):  # top-level in both APIs, same meaning
        if body.get(key) is not None:
            payload[key] = body[key]
    payload.update(extra)
    return payload


def to_ollama_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    converted = []
    for call in calls:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments else {}
            except ValueError:
                arguments = {}
        converted.append({"function": {"name": function.get("name", ""), "arguments": arguments or {}}})
    return converted


def metrics(usage: Any, timings: Any, started: float) -> dict[str, int]:
    """Ollama's final-object metrics (zero values left out, as its ``omitempty`` does)."""
    usage = usage if isinstance(usage, dict) else {}
    timings = timings if isinstance(timings, dict) else {}
    values = {
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
        "prompt_eval_duration": int(float(timings.get("prompt_ms") or 0) * 1e6),
        "eval_count": int(usage.get("completion_tokens") or 0),
        "eval_duration": int(float(timings.get("predicted_ms") or 0) * 1e6),
    }
    return {key: value for key, value in values.items() if value}


async def sse_payloads(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The ``data:`` payloads of an SSE body, whatever the line length."""
    pending = b""
    async for data in response.content.iter_any():
        pending += data
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.strip()
            if line.startswith(b"data:"):
                yield line[5:].strip()
    if pending.strip().startswith(b"data:"):
        yield pending.strip()[5:].strip()


class OllamaFront:
    """The Ollama API over ``upstream`` (an OpenAI base URL, including ``/v1``)."""

    def __init__(self, upstream: str, *, upstream_extra: dict[str, Any] | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.upstream_extra = dict(upstream_extra or {})
        self.requests: list[dict[str, Any]] = []
        self._session: aiohttp.ClientSession | None = None
        self._models: list[dict[str, Any]] | None = None
        self._models_at = 0.0

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=120))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.root)
        app.router.add_get("/api/version", self.version)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_post("/api/chat", self.chat)

        async def close_session(_: web.Application) -> None:
            await self.aclose()

        app.on_cleanup.append(close_session)
        return app

    async def root(self, _: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, _: web.Request) -> web.Response:
        return web.json_response({"version": "0.0.0-front"})

    async def upstream_models(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self._models is None or now - self._models_at > _MODELS_CACHE_SECONDS:
            async with self.session.get(self.upstream + "/models") as response:
                response.raise_for_status()
                data = await response.json(content_type=None)
            self._models = [item for item in data.get("data") or [] if isinstance(item, dict) and "id" in item]
            self._models_at = now
        return self._models

    async def tags(self, _: web.Request) -> web.Response:
        try:
            models = await self.upstream_models()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return ollama_error(f"upstream unavailable: {type(exc).__name__}", 500)
        listed = []
        for item in models:
            meta: dict[str, Any] = item["meta"] if isinstance(item.get("meta"), dict) else {}
            name = f"{item['id']}:latest" if ":" not in item["id"] else item["id"]
            size = int(meta.get("size") or 0)
            created = int(item.get("created") or time.time())
            listed.append(
                {
                    "name": name,
                    "model": name,
                    "modified_at": datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z"),
                    "size": size,
                    # Ollama's digest is its manifest's sha256; there is none here, so a stable stand-in.
                    "digest": hashlib.sha256(f"{name}:{size}".encode()).hexdigest(),
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "",
                        "families": None,
                        "parameter_size": parameter_size(meta.get("n_params")),
                        "quantization_level": str(meta.get("ftype") or ""),
                    },
                }
            )
        return web.json_response({"models": listed})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        raw = await request.read()
        if not raw:
            return ollama_error("missing request body", 400)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return ollama_error(str(exc), 400)
        if not isinstance(body, dict):
            return ollama_error("request body must be a JSON object", 400)
        self.requests.append(body)
        model = body.get("model")
        if not model or not isinstance(model, str):
            return ollama_error("model is required", 400)
        try:
            known = {base_name(item["id"]) for item in await self.upstream_models()}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return ollama_error(f"upstream unavailable: {type(exc).__name__}", 500)
        if base_name(model) not in known:
            return ollama_error(f'model "{model}" not found, try pulling it first', 404)
        if not body.get("messages"):
            # Ollama loads the model and answers at once (docs/api.md, "Load a model").
            message = {"role": "assistant", "content": ""}
            return web.json_response(
                {"model": model, "created_at": now_iso(), "message": message, "done_reason": "load", "done": True}
            )
        payload = to_openai_request(body, self.upstream_extra)
        if body.get("stream") is False:
            return await self._whole(model, payload, started)
        return await self._stream(request, model, payload, started)

    async def _whole(self, model: str, payload: dict[str, Any], started: float) -> web.Response:
        try:
            async with self.session.post(self.upstream + "/chat/completions", json=payload) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return ollama_error(f"upstream unavailable: {type(exc).__name__}", 500)
        if status >= 400:
            return ollama_error(upstream_error_message(raw, status), status)
        data = json.loads(raw)
        choice = data["choices"][0]
        upstream_message = choice.get("message") or {}
        message: dict[str, Any] = {"role": "assistant", "content": upstream_message.get("content") or ""}
        if upstream_message.get("tool_calls"):
            message["tool_calls"] = to_ollama_tool_calls(upstream_message["tool_calls"])
        answer = {
            "model": model,
            "created_at": now_iso(),
            "message": message,
            "done_reason": done_reason(choice.get("finish_reason")),
            "done": True,
            **metrics(data.get("usage"), data.get("timings"), started),
        }
        if isinstance(choice.get("logprobs"), dict):
            answer["logprobs"] = choice["logprobs"].get("content") or []  # Ollama: the entries themselves
        return web.json_response(answer)

    async def _stream(
        self, request: web.Request, model: str, payload: dict[str, Any], started: float
    ) -> web.StreamResponse:
        payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}
        try:
            upstream = await self.session.post(self.upstream + "/chat/completions", json=payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return ollama_error(f"upstream unavailable: {type(exc).__name__}", 500)
        try:
            if upstream.status >= 400:
                return ollama_error(upstream_error_message(await upstream.read(), upstream.status), upstream.status)
            response = web.StreamResponse(headers={"Content-Type": NDJSON})
            await response.prepare(request)

            async def line(obj: dict[str, Any]) -> None:
                await response.write(json.dumps(obj).encode() + b"\n")

            calls: dict[int, dict[str, Any]] = {}
            finish: str | None = None
            usage: Any = None
            timings: Any = None
            async for data in sse_payloads(upstream):
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    await line({"error": upstream_error_message(data, 500)})
                    return response
                usage = chunk.get("usage") or usage
                timings = chunk.get("timings") or timings
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        message = {"role": "assistant", "content": delta["content"]}
                        piece = {"model": model, "created_at": now_iso(), "message": message, "done": False}
                        if isinstance(choice.get("logprobs"), dict):
                            piece["logprobs"] = choice["logprobs"].get("content") or []
                        await line(piece)
                    for call in delta.get("tool_calls") or []:
                        slot = calls.setdefault(int(call.get("index", len(calls))), {"name": "", "arguments": ""})
                        function = call.get("function") or {}
                        slot["name"] += function.get("name") or ""
                        slot["arguments"] += function.get("arguments") or ""
                    finish = choice.get("finish_reason") or finish
            if calls:
                whole = [{"function": calls[index]} for index in sorted(calls)]
                message = {"role": "assistant", "content": "", "tool_calls": to_ollama_tool_calls(whole)}
                await line({"model": model, "created_at": now_iso(), "message": message, "done": False})
            await line(
                {
                    "model": model,
                    "created_at": now_iso(),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": done_reason(finish),
                    "done": True,
                    **metrics(usage, timings, started),
                }
            )
            await response.write_eof()
            return response
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            return web.Response(status=499)  # our client left; nobody reads this
        finally:
            # Closing (not releasing) drops the upstream connection: llama-server stops generating.
            upstream.close()


@asynccontextmanager
async def serve(
    upstream: str, *, host: str = "127.0.0.1", port: int = 0, upstream_extra: dict[str, Any] | None = None
) -> AsyncIterator[tuple[OllamaFront, str]]:
    """Run a front on ``host:port`` (0: any free port) in this event loop; yields it and its URL."""
    front = OllamaFront(upstream, upstream_extra=upstream_extra)
    # handler_cancellation: a client that disconnects cancels its handler (and so the upstream call).
    runner = web.AppRunner(front.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    try:
        yield front, f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()


async def _main(args: argparse.Namespace) -> None:
    extra = json.loads(args.upstream_extra) if args.upstream_extra else None
    async with serve(args.upstream, host=args.host, port=args.port, upstream_extra=extra) as (_, url):
        print(f"ollama front on {url} -> {args.upstream}", flush=True)
        with suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Ollama's native API in front of an OpenAI-compatible server.")
    parser.add_argument("--upstream", required=True, help="OpenAI base URL, including /v1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--upstream-extra", default="", help="JSON object merged into every upstream request")
    with suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
