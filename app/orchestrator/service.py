"""The chat pipeline: from a validated request to a completion, whole or streamed.

Routers call one method here. The pipeline owns ids, model selection, the wire shapes and the
orchestrator fields (``request_id``, ``memory_decision``, ``route_decision``, ``model_decision``,
``tool_result``); the provider only answers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.auth import Principal
from app.errors import InvalidRequest, OrchestratorError
from app.observability.logging import get_logger
from app.orchestrator.sse import DONE, ChunkWriter
from app.providers.base import LLMProvider, ModelCard, ProviderRequest, StreamDelta
from app.schemas.chat import ChatCompletionRequest

log = get_logger("orchestrator")

# Request fields the gateway consumes itself; everything else is forwarded to the provider.
_GATEWAY_FIELDS = frozenset({"model", "messages", "stream", "stream_options"})


@dataclass(slots=True)
class CallContext:
    """Who is asking and how this request is identified."""

    principal: Principal
    request_id: str  # the caller's X-Request-ID (sanitised) or a generated one
    route: str
    conversation_id: str | None = None


@dataclass(slots=True)
class Decisions:
    """The orchestrator fields returned next to the completion (null until a stage fills them)."""

    request_id: str
    memory_decision: dict[str, Any] | None = None
    route_decision: dict[str, Any] | None = None
    model_decision: dict[str, Any] | None = None
    tool_result: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "memory_decision": self.memory_decision,
            "route_decision": self.route_decision,
            "model_decision": self.model_decision,
            "tool_result": self.tool_result,
        }


def new_completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


MODELS_CACHE_SECONDS = 10.0  # /v1/models asks the upstream at most this often


class Orchestrator:
    """Runs chat requests against the configured provider."""

    def __init__(
        self,
        *,
        provider: LLMProvider,
        default_model: str,
        model_allowlist: list[str],
        max_output_chars: int = 0,
    ) -> None:
        self.provider = provider
        self.default_model = default_model
        self.model_allowlist = frozenset(model_allowlist)
        self.max_output_chars = max_output_chars  # <= 0: unlimited
        self._models: list[ModelCard] | None = None
        self._models_at = 0.0

    async def list_models(self) -> list[ModelCard]:
        """The provider's models, cached briefly (a model list changes rarely, clients ask often)."""
        now = time.monotonic()
        if self._models is None or now - self._models_at > MODELS_CACHE_SECONDS:
            self._models = await self.provider.list_models()
            self._models_at = now
        return self._models

    def _resolve_model(self, requested: str | None) -> str:
        if requested and self.model_allowlist and requested not in self.model_allowlist:
            raise InvalidRequest(
                f"The model '{requested}' is not allowed here (ORCH_LLM_MODEL_ALLOWLIST).",
                param="model",
                code="model_not_allowed",
            )
        return requested or self.default_model

    def _provider_request(self, chat: ChatCompletionRequest, raw: dict[str, Any]) -> ProviderRequest:
        options = {key: value for key, value in raw.items() if key not in _GATEWAY_FIELDS}
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        return ProviderRequest(
            model=self._resolve_model(chat.model),
            messages=raw["messages"],
            options=options,
            include_usage=include_usage,
        )

    async def complete(self, chat: ChatCompletionRequest, raw: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        """Answer in one piece: a ``chat.completion`` with the orchestrator fields."""
        request = self._provider_request(chat, raw)
        decisions = Decisions(request_id=ctx.request_id)
        completion = await self.provider.complete(request)
        cap = self.max_output_chars
        if cap > 0 and completion.content and len(completion.content) > cap:
            completion.content = completion.content[:cap]
            completion.finish_reason = "length"
        message: dict[str, Any] = {"role": "assistant", "content": completion.content}
        if completion.tool_calls:
            message["tool_calls"] = completion.tool_calls
        return {
            "id": new_completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": completion.model or request.model,
            "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason}],
            "usage": completion.usage.as_dict() if completion.usage else None,
            **decisions.as_dict(),
        }

    async def open_stream(
        self, chat: ChatCompletionRequest, raw: dict[str, Any], ctx: CallContext
    ) -> AsyncIterator[bytes]:
        """Start a streamed answer.

        Everything that can fail before the first byte (validation, model choice, the provider's
        first piece) fails here, so the caller still gets a real HTTP status. The returned
        iterator yields SSE-encoded bytes and ends with ``[DONE]``.
        """
        request = self._provider_request(chat, raw)
        decisions = Decisions(request_id=ctx.request_id)
        pieces = aiter(self.provider.stream(request))
        try:
            first: StreamDelta | None = await anext(pieces)
        except StopAsyncIteration:
            first = None
        writer = ChunkWriter(new_completion_id(), int(time.time()), request.model)
        return self._relay(writer, first, pieces, request, decisions)

    async def _relay(
        self,
        writer: ChunkWriter,
        first: StreamDelta | None,
        pieces: AsyncIterator[StreamDelta],
        request: ProviderRequest,
        decisions: Decisions,
    ) -> AsyncIterator[bytes]:
        usage = None
        extra: dict[str, Any] | None = decisions.as_dict()  # orchestrator fields ride on the first chunk
        cap = self.max_output_chars
        room = cap if cap > 0 else -1  # characters still allowed; -1: unlimited
        try:
            piece = first
            while piece is not None:
                if piece.usage is not None:
                    usage = piece.usage
                content, finish = piece.content, piece.finish_reason
                if room >= 0 and content:
                    if len(content) > room:
                        # Over ORCH_LLM_MAX_OUTPUT_CHARS: send what fits, finish with "length" and
                        # stop the upstream (closing the stream below), whatever it had left.
                        content, finish, usage = content[:room], "length", None
                    room -= len(content)
                if content or piece.tool_calls is not None or finish:
                    yield writer.delta(content=content, tool_calls=piece.tool_calls, finish_reason=finish, extra=extra)
                    extra = None
                if finish == "length" and room == 0:
                    break
                piece = await anext(pieces, None)
            if extra is not None:  # the provider sent nothing at all: still a well-formed stream
                yield writer.delta(content="", finish_reason="stop", extra=extra)
            if request.include_usage and usage is not None:
                yield writer.usage(usage.as_dict())
        except OrchestratorError as exc:
            yield writer.error(exc)
        except Exception:
            log.exception("stream failed after the first byte")
            yield writer.error(OrchestratorError("The stream failed; the answer is incomplete."))
        finally:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()
        yield DONE
