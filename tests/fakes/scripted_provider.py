"""An in-process LLMProvider test double: scripted completions and streams, tool calls included.

The pipeline can then be driven without HTTP or a fake upstream (as pydantic-ai's ``TestModel``
and ``FunctionModel`` do for its agents). Each call to :meth:`ScriptedProvider.complete` or
:meth:`ScriptedProvider.stream` takes the next :class:`Reply` of the script (or asks a function
for it), and records the request it was given, so a test can check what the model was asked:
the messages after the stages, the tools the tool loop offered, the tool results it sent back.

A streamed reply is cut the way upstreams cut theirs: text a few characters per piece, each tool
call as a first delta with its id and name followed by its arguments in two halves, then the finish
reason and (when asked for) the usage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.errors import OrchestratorError
from app.providers.base import Completion, ModelCard, ProviderHealth, ProviderRequest, StreamDelta, Usage


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] | str  # a str is sent as it is (e.g. arguments that are not JSON)
    id: str = ""

    def arguments_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else orjson.dumps(self.arguments).decode()


@dataclass(slots=True)
class Reply:
    """One answer of the model: text, tool calls, or both (or an error raised instead)."""

    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None  # default: "tool_calls" when there are calls, else "stop"
    usage: Usage | None = None
    error: OrchestratorError | None = None  # raised before the first piece
    chunk_chars: int = 4  # a streamed text's piece size

    @property
    def finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")

    def wire_tool_calls(self) -> list[dict[str, Any]] | None:
        if not self.tool_calls:
            return None
        return [
            {
                "id": call.id or f"call_{index}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_text()},
            }
            for index, call in enumerate(self.tool_calls)
        ]


def text(content: str, **kwargs: Any) -> Reply:
    return Reply(content=content, **kwargs)


def tool_call(name: str, arguments: dict[str, Any] | str, *, id: str = "", content: str | None = None) -> Reply:
    return Reply(content=content, tool_calls=[ToolCall(name, arguments, id)])


Script = Sequence[Reply] | Callable[[ProviderRequest], Reply]


@dataclass(slots=True)
class Asked:
    """A request the provider was given (copied: the pipeline reuses its objects)."""

    model: str
    messages: list[dict[str, Any]]
    options: dict[str, Any]
    stream: bool

    @property
    def tool_names(self) -> list[str]:
        return [tool["function"]["name"] for tool in self.options.get("tools") or []]


class ScriptedProvider:
    """Implements :class:`app.providers.base.LLMProvider` from a script of replies."""

    name = "scripted"

    def __init__(self, script: Script = (), *, models: Sequence[str] = ("scripted-model",)) -> None:
        self._replies = list(script) if not callable(script) else []
        self._answer = script if callable(script) else None
        self.models = list(models)
        self.asked: list[Asked] = []
        self.closed_streams = 0

    def _next(self, request: ProviderRequest, *, stream: bool) -> Reply:
        self.asked.append(
            Asked(
                model=request.model,
                messages=[dict(message) for message in request.messages],
                options=dict(request.options),
                stream=stream,
            )
        )
        request.stats.attempts += 1
        if self._answer is not None:
            reply = self._answer(request)
        elif self._replies:
            reply = self._replies.pop(0)
        else:
            raise AssertionError(f"the script has no reply left for call {len(self.asked)}")
        if reply.error is not None:
            raise reply.error
        return reply

    @property
    def unused(self) -> int:
        """Replies the pipeline did not ask for."""
        return len(self._replies)

    async def complete(self, request: ProviderRequest) -> Completion:
        reply = self._next(request, stream=False)
        return Completion(
            content=reply.content,
            model=request.model,
            finish_reason=reply.finish,
            tool_calls=reply.wire_tool_calls(),
            usage=reply.usage,
        )

    def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        reply = self._next(request, stream=True)  # before the first piece: raised, not yielded
        return self._pieces(reply, include_usage=request.include_usage)

    async def _pieces(self, reply: Reply, *, include_usage: bool) -> AsyncIterator[StreamDelta]:
        try:
            content = reply.content or ""
            size = max(1, reply.chunk_chars)
            for start in range(0, len(content), size):
                yield StreamDelta(content=content[start : start + size])
            for index, call in enumerate(reply.tool_calls):
                arguments = call.arguments_text()
                half = len(arguments) // 2
                yield StreamDelta(
                    tool_calls=[
                        {
                            "index": index,
                            "id": call.id or f"call_{index}",
                            "type": "function",
                            "function": {"name": call.name, "arguments": arguments[:half]},
                        }
                    ]
                )
                yield StreamDelta(tool_calls=[{"index": index, "function": {"arguments": arguments[half:]}}])
            yield StreamDelta(finish_reason=reply.finish)
            if include_usage and reply.usage is not None:
                yield StreamDelta(usage=reply.usage)
        finally:
            self.closed_streams += 1

    async def list_models(self) -> list[ModelCard]:
        return [ModelCard(id=model, owned_by="scripted") for model in self.models]

    async def health(self) -> ProviderHealth:
        return ProviderHealth(ok=True)

    async def aclose(self) -> None:
        return None
