"""Any OpenAI-compatible server: llama.cpp's llama-server, vLLM, LM Studio, Ollama's /v1, OpenAI.

``ORCH_OPENAI_BASE_URL`` is what the OpenAI client calls ``base_url`` (it includes ``/v1``). The
request is forwarded as the client sent it (every field the gateway does not consume), and the
answer comes back with its ``tool_calls`` intact; streamed tool-call deltas keep their ``index``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from app.errors import ProviderError
from app.providers import shapes
from app.providers.base import (
    MAX_CHOICES,
    Completion,
    ModelCard,
    ProviderHealth,
    ProviderRequest,
    StreamDelta,
    Usage,
    arrived_together,
)
from app.providers.upstream import Upstream, text_content, upstream_message


def usage_from(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
        prompt_tokens_details=shapes.optional_object(data.get("prompt_tokens_details"), "usage.prompt_tokens_details"),
        completion_tokens_details=shapes.optional_object(
            data.get("completion_tokens_details"), "usage.completion_tokens_details"
        ),
    )


def _choice(choice: Any, where: str, model: str) -> Completion:
    message = choice["message"]
    return Completion(
        content=text_content(message.get("content")),
        model=model,
        finish_reason=str(choice.get("finish_reason") or "stop"),
        tool_calls=shapes.tool_calls(message.get("tool_calls"), f"{where}.message.tool_calls", streamed=False) or None,
        logprobs=shapes.optional_object(choice.get("logprobs"), f"{where}.logprobs"),
    )


class OpenAICompatProvider:
    """Implements :class:`app.providers.base.LLMProvider` over an OpenAI-compatible HTTP API."""

    name = "openai"

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def _body(self, request: ProviderRequest, *, stream: bool) -> bytes:
        payload = dict(request.options)
        payload["model"] = request.model
        payload["messages"] = request.messages
        if stream:
            payload["stream"] = True
            # Always asked for: receipts record token usage even when the client did not ask.
            payload["stream_options"] = {"include_usage": True}
        return orjson.dumps(payload)

    async def complete(self, request: ProviderRequest) -> Completion:
        accepted = await self.upstream.send("POST", "/chat/completions", self._body(request, stream=False))
        request.stats.attempts = accepted.attempts
        raw = await self.upstream.read_body(accepted)
        with self.upstream.parsing("not a chat.completion"), shapes.reported(self.upstream):
            data = orjson.loads(raw)
            model = str(data.get("model") or request.model)
            choices = data["choices"][:MAX_CHOICES]
            first, *others = [_choice(choice, f"choices[{i}]", model) for i, choice in enumerate(choices)]
            first.usage = usage_from(data.get("usage"))
            first.system_fingerprint = shapes.optional_text(data.get("system_fingerprint"), "system_fingerprint")
            first.others = others
            return first

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        accepted = await self.upstream.send("POST", "/chat/completions", self._body(request, stream=True))
        request.stats.attempts = accepted.attempts
        response = accepted.response
        with self.upstream.relaying(accepted) as relaying:
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                # Some servers answer an error (or a whole completion) as plain JSON here.
                raw = await self.upstream.read_error_body(response)
                message, _ = self.upstream.error_fields(raw, response.status)
                raise self.upstream.bad_answer(f"expected an event stream: {message}")
            finished = False  # a finish_reason came
            async for lines in self.upstream.line_batches(relaying, response):
                batch: list[StreamDelta] = []
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue  # blank separators, comments, `event:` lines
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        relaying.finished = True
                        break
                    for delta in self._deltas(payload):
                        finished = finished or delta.finish_reason is not None
                        batch.append(delta)
                if batch:
                    relaying.ticket.proven()
                for delta in arrived_together(batch):
                    yield delta
                if relaying.finished:
                    break
            else:
                # Closed without [DONE]: complete if a finish_reason came (some servers omit [DONE]),
                # cut off otherwise.
                if not finished:
                    raise ProviderError("The openai upstream ended the stream without finishing it.")
                relaying.finished = True

    def _deltas(self, payload: bytes) -> list[StreamDelta]:
        """One `data:` event as deltas: one per choice it carries, and its usage.

        This runs for every event of every stream: the usual fields are checked inline and the
        shape module is called for what is present (or wrong) only.
        """
        with self.upstream.parsing("a malformed stream event"):
            try:
                return self._event_deltas(payload)
            except shapes.ShapeError as exc:
                raise self.upstream.bad_answer(str(exc)) from None

    def _event_deltas(self, payload: bytes) -> list[StreamDelta]:
        chunk = orjson.loads(payload)
        if "error" in chunk:
            raise self.upstream.failed_mid_stream(upstream_message(payload, 500)[0])
        raw_usage = chunk.get("usage")
        fingerprint = chunk.get("system_fingerprint")
        deltas: list[StreamDelta] = []
        for position, choice in enumerate(chunk.get("choices") or ()):
            delta = choice.get("delta") or {}
            reason = choice.get("finish_reason")
            calls = delta.get("tool_calls")
            index = choice.get("index", position)
            if index.__class__ is not int or not 0 <= index < MAX_CHOICES:
                shapes.choice_index(index, f"choices[{position}].index")  # raises, naming the field
            logprobs = choice.get("logprobs")
            if logprobs is not None:
                logprobs = shapes.optional_object(logprobs, f"choices[{position}].logprobs")
            deltas.append(
                StreamDelta(
                    content=text_content(delta.get("content")),
                    tool_calls=None
                    if calls is None
                    else shapes.tool_calls(calls, f"choices[{position}].delta.tool_calls", streamed=True),
                    finish_reason=None if reason is None else str(reason),
                    index=index,
                    logprobs=logprobs,
                )
            )
        if raw_usage is not None:
            usage = usage_from(raw_usage)
            if usage is not None:
                deltas.append(StreamDelta(usage=usage))
        if fingerprint is not None:
            fingerprint = shapes.optional_text(fingerprint, "system_fingerprint")
            if deltas:
                deltas[0].system_fingerprint = fingerprint
        return deltas

    async def list_models(self) -> list[ModelCard]:
        data = await self.upstream.get_json("/models")
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise self.upstream.bad_answer("not a model list")
        with self.upstream.parsing("not a model list"):
            return [
                ModelCard(
                    id=str(item["id"]),
                    owned_by=str(item.get("owned_by") or "upstream"),
                    created=int(item.get("created") or 0),
                )
                for item in items
                if isinstance(item, dict) and "id" in item
            ]

    async def health(self) -> ProviderHealth:
        ok, reason = await self.upstream.probe("/models")
        return ProviderHealth(ok, reason)

    async def aclose(self) -> None:
        await self.upstream.aclose()
