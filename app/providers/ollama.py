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

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson

from app.errors import InvalidRequest, ProviderError
from app.providers import shapes
from app.providers.base import (
    Completion,
    ModelCard,
    ProviderHealth,
    ProviderRequest,
    StreamDelta,
    Usage,
    arrived_together,
)
from app.providers.upstream import Upstream, iter_line_batches, text_content

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


def _finish(data: dict[str, Any], had_tool_calls: bool) -> str:
    if had_tool_calls:
        return "tool_calls"
    return "length" if data.get("done_reason") == "length" else "stop"


def _usage(data: dict[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=int(data.get("prompt_eval_count") or 0),
        completion_tokens=int(data.get("eval_count") or 0),
    )


class OllamaProvider:
    """Implements :class:`app.providers.base.LLMProvider` over Ollama's native API."""

    name = "ollama"

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def complete(self, request: ProviderRequest) -> Completion:
        body = orjson.dumps(to_ollama_request(request, stream=False))
        accepted = await self.upstream.send("POST", "/api/chat", body)
        request.stats.attempts = accepted.attempts
        body = await self.upstream.read_body(accepted.response)
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
            )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        body = orjson.dumps(to_ollama_request(request, stream=True))
        accepted = await self.upstream.send("POST", "/api/chat", body)
        request.stats.attempts = accepted.attempts
        response = accepted.response
        tool_index = 0
        with self.upstream.relaying(response) as relaying:
            async for lines in iter_line_batches(response):
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
                    if calls:
                        tool_index += len(calls)
                    if content or calls:
                        batch.append(StreamDelta(content=content or None, tool_calls=calls))
                    if data.get("done"):
                        relaying.finished = True
                        with self.upstream.parsing("a malformed last stream line"):
                            batch.append(StreamDelta(finish_reason=_finish(data, tool_index > 0), usage=_usage(data)))
                        break
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
