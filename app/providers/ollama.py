"""Ollama's native API (``/api/chat``, NDJSON when streaming; ``/api/tags``), translated to and from
the OpenAI shapes at ``ORCH_OLLAMA_URL``.

Mapping (OpenAI -> Ollama): ``max_tokens``/``max_completion_tokens`` -> ``options.num_predict``;
``temperature``, ``top_p``, ``seed``, ``stop``, ``presence_penalty``, ``frequency_penalty`` ->
``options``; ``response_format`` json_object -> ``format: "json"``, json_schema -> ``format:
<schema>``; ``tools`` as is; content parts -> text plus ``images`` (base64 data URLs); assistant
``tool_calls`` arguments JSON string <-> object. Back: ``done_reason`` -> ``finish_reason``,
``prompt_eval_count``/``eval_count`` -> usage, ``tool_calls`` get ids and string arguments.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson

from app.errors import InvalidRequest, ProviderError
from app.providers import shapes
from app.providers.base import (
    CallStats,
    Completion,
    ModelCard,
    ProviderHealth,
    ProviderRequest,
    StreamDelta,
    Usage,
    arrived_together,
)
from app.providers.upstream import Upstream, text_content

# OpenAI sampling fields that Ollama takes under `options` with the same meaning.
_SAME_OPTIONS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
_DATA_URL_PREFIX = "data:"


def _text_and_images(content: Any) -> tuple[str, list[str]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if not url.startswith(_DATA_URL_PREFIX):
                raise InvalidRequest(
                    "The ollama provider takes images as base64 data: URLs only.",
                    param="messages",
                    code="unsupported_content",
                )
            images.append(url.split(",", 1)[-1])
    return "\n".join(texts), images


def _arguments_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return orjson.loads(arguments) if arguments else {}
        except orjson.JSONDecodeError:
            return {}
    return arguments or {}


def to_ollama_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    converted = []
    for message in messages:
        text, images = _text_and_images(message.get("content"))
        role = message.get("role")
        item: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": text}
        if images:
            item["images"] = images
        if message.get("tool_calls"):
            item["tool_calls"] = [
                {
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": _arguments_object(call["function"].get("arguments")),
                    }
                }
                for call in message["tool_calls"]
                if isinstance(call, dict) and isinstance(call.get("function"), dict)
            ]
        if role == "tool" and message.get("name"):
            item["tool_name"] = message["name"]
        converted.append(item)
    return converted


def to_ollama_request(request: ProviderRequest, *, stream: bool) -> dict[str, Any]:
    options: dict[str, Any] = {}
    source = request.options
    for key in _SAME_OPTIONS:
        if source.get(key) is not None:
            options[key] = source[key]
    limit = source.get("max_completion_tokens") or source.get("max_tokens")
    if limit is not None:
        options["num_predict"] = limit
    stop = source.get("stop")
    if stop is not None:
        options["stop"] = [stop] if isinstance(stop, str) else stop
    body: dict[str, Any] = {
        "model": request.model,
        "messages": to_ollama_messages(request.messages),
        "stream": stream,
    }
    if options:
        body["options"] = options
    if source.get("tools"):
        body["tools"] = source["tools"]
    # Ollama takes these at the top level, with OpenAI's meaning (and answers in OpenAI's entry shape).
    for key in ("logprobs", "top_logprobs"):
        if source.get(key) is not None:
            body[key] = source[key]
    response_format = source.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_object":
            body["format"] = "json"
        elif response_format.get("type") == "json_schema":
            body["format"] = (response_format.get("json_schema") or {}).get("schema") or "json"
    return body


def from_ollama_tool_calls(calls: Any, start: int = 0) -> list[dict[str, Any]] | None:
    """Ollama's calls in the OpenAI shape; a field of the wrong type raises :class:`app.providers.shapes.ShapeError`."""
    checked = shapes.tool_calls(calls, "message.tool_calls", streamed=False) if calls else None
    if not checked:
        return None
    result = []
    for offset, call in enumerate(checked):
        function = call["function"]
        arguments = function.get("arguments")
        result.append(
            {
                "index": start + offset,
                "id": f"call_{start + offset}",
                "type": "function",
                "function": {"name": function["name"], "arguments": arguments if arguments is not None else "{}"},
            }
        )
    return result


def _logprobs(data: dict[str, Any]) -> dict[str, Any] | None:
    """Ollama's ``logprobs`` (a list of OpenAI-shaped token entries) as OpenAI's ``{"content": [...]}``."""
    entries = data.get("logprobs")
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise shapes.ShapeError(f"logprobs is {shapes.json_type(entries)}, expected an array")
    return {"content": entries}


def _finish(data: dict[str, Any], had_tool_calls: bool) -> str:
    if had_tool_calls:
        return "tool_calls"
    return "length" if data.get("done_reason") == "length" else "stop"


def _usage(data: dict[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=int(data.get("prompt_eval_count") or 0),
        completion_tokens=int(data.get("eval_count") or 0),
    )


# Of the n requests one request fans out to, how many run at once: Ollama queues what it cannot
# run in parallel (OLLAMA_NUM_PARALLEL) anyway, and this keeps one caller from opening n connections.
FAN_OUT_CONCURRENCY = 4
_FAN_OUT_BUFFER = 64  # pieces read ahead of the client across the n streams (backpressure beyond)


def _choices(request: ProviderRequest) -> int:
    n = request.options.get("n")
    return n if isinstance(n, int) and n > 1 else 1


def _nth(request: ProviderRequest, index: int) -> ProviderRequest:
    """The request for choice ``index`` of n: its own call statistics, and with a ``seed`` the seed
    plus the index, so that the n choices differ and stay reproducible."""
    options = request.options
    seed = options.get("seed")
    if isinstance(seed, int) and index:
        options = {**options, "seed": seed + index}
    stats = request.stats if index == 0 else CallStats()
    return replace(request, options=options, stats=stats)


class OllamaProvider:
    """Implements :class:`app.providers.base.LLMProvider` over Ollama's native API."""

    name = "ollama"

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def complete(self, request: ProviderRequest) -> Completion:
        n = _choices(request)
        if n == 1:
            return await self._complete(request)
        # Ollama answers one choice per request: n requests, at most FAN_OUT_CONCURRENCY at a time.
        gate = asyncio.Semaphore(FAN_OUT_CONCURRENCY)

        async def one(index: int) -> Completion:
            async with gate:
                return await self._complete(_nth(request, index))

        tasks = [asyncio.create_task(one(index)) for index in range(n)]
        try:
            first, *others = await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # one failed (or the caller left): the others are not needed
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for other in others:
            if other.usage is not None:
                first.usage = first.usage or Usage()
                first.usage.add(other.usage)
        first.others = others
        return first

    async def _complete(self, request: ProviderRequest) -> Completion:
        body = orjson.dumps(to_ollama_request(request, stream=False))
        accepted = await self.upstream.send("POST", "/api/chat", body)
        request.stats.attempts = accepted.attempts
        body = await self.upstream.read_body(accepted)
        with self.upstream.parsing("not an Ollama chat answer"), shapes.reported(self.upstream):
            data = orjson.loads(body)
            message = data.get("message")
            if not isinstance(message, dict):
                raise self.upstream.bad_answer("no message")
            tool_calls = from_ollama_tool_calls(message.get("tool_calls"))
            if tool_calls:
                for call in tool_calls:
                    del call["index"]  # whole messages carry no index (OpenAI shape)
            content = text_content(message.get("content"))
            return Completion(
                content=content if not tool_calls else (content or None),
                model=str(data.get("model") or request.model),
                finish_reason=_finish(data, bool(tool_calls)),
                tool_calls=tool_calls,
                usage=_usage(data),
                logprobs=_logprobs(data),
            )

    def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        n = _choices(request)
        return self._stream(request) if n == 1 else self._fan_out(request, n)

    async def _fan_out(self, request: ProviderRequest, n: int) -> AsyncIterator[StreamDelta]:
        """n streams at once (at most FAN_OUT_CONCURRENCY), their pieces labelled with their choice
        index as they arrive; one usage, the sum, at the end. A failure of any fails the whole."""
        pieces: asyncio.Queue[tuple[int, StreamDelta | Exception | None]] = asyncio.Queue(_FAN_OUT_BUFFER)
        gate = asyncio.Semaphore(FAN_OUT_CONCURRENCY)

        async def run(index: int) -> None:
            try:
                async with gate, aclosing(self._stream(_nth(request, index))) as stream:
                    async for piece in stream:
                        await pieces.put((index, piece))
            except Exception as exc:  # handed to the reader, which raises it
                await pieces.put((index, exc))
            else:
                await pieces.put((index, None))

        tasks = [asyncio.create_task(run(index)) for index in range(n)]
        usage = Usage()
        try:
            running = n
            while running:
                index, item = await pieces.get()
                if item is None:
                    running -= 1
                    continue
                if isinstance(item, Exception):
                    raise item
                if item.usage is not None:
                    usage.add(item.usage)
                    item.usage = None
                item.index, item.more = index, not pieces.empty()
                if item.content or item.tool_calls or item.finish_reason or item.logprobs is not None:
                    yield item
            yield StreamDelta(usage=usage)
        finally:
            # Done, failed, or the caller left: the other requests stop (their connections close).
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _stream(self, request: ProviderRequest) -> AsyncGenerator[StreamDelta]:
        body = orjson.dumps(to_ollama_request(request, stream=True))
        accepted = await self.upstream.send("POST", "/api/chat", body)
        request.stats.attempts = accepted.attempts
        response = accepted.response
        tool_index = 0
        with self.upstream.relaying(accepted) as relaying:
            async for lines in self.upstream.line_batches(relaying, response):
                batch: list[StreamDelta] = []
                for line in lines:
                    if not line.strip():
                        continue
                    with self.upstream.parsing("a malformed stream line"), shapes.reported(self.upstream):
                        data = orjson.loads(line)
                        if "error" in data:
                            raise self.upstream.failed_mid_stream(str(data["error"]))
                        message = data.get("message") or {}
                        calls = from_ollama_tool_calls(message.get("tool_calls"), tool_index)
                        content = text_content(message.get("content"))
                        logprobs = _logprobs(data)
                    if calls:
                        tool_index += len(calls)
                    if content or calls or logprobs:
                        batch.append(StreamDelta(content=content or None, tool_calls=calls, logprobs=logprobs))
                    if data.get("done"):
                        relaying.finished = True
                        with self.upstream.parsing("a malformed last stream line"):
                            batch.append(StreamDelta(finish_reason=_finish(data, tool_index > 0), usage=_usage(data)))
                        break
                if batch:
                    relaying.ticket.proven()
                for delta in arrived_together(batch):
                    yield delta
                if relaying.finished:
                    break
            if not relaying.finished:
                raise ProviderError("The ollama upstream ended the stream without finishing it.")

    async def list_models(self) -> list[ModelCard]:
        data = await self.upstream.get_json("/api/tags")
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise self.upstream.bad_answer("not a model list")
        cards = []
        for item in models:  # (each field read defensively: nothing here can raise)
            if not isinstance(item, dict) or not item.get("name"):
                continue
            created = 0
            if item.get("modified_at"):
                try:
                    created = int(datetime.fromisoformat(str(item["modified_at"]).replace("Z", "+00:00")).timestamp())
                except ValueError:
                    created = 0
            cards.append(ModelCard(id=str(item["name"]), owned_by="ollama", created=created))
        return cards

    async def health(self) -> ProviderHealth:
        ok, reason = await self.upstream.probe("/api/tags")
        return ProviderHealth(ok, reason)

    async def aclose(self) -> None:
        await self.upstream.aclose()
