"""The LLM provider port.

A provider turns a :class:`ProviderRequest` (OpenAI-shaped messages plus the options to forward)
into a :class:`Completion`, or a stream of :class:`StreamDelta` pieces. The orchestrator owns
everything around it: ids, the wire format, output caps, receipts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(slots=True)
class CallStats:
    """Filled in by the provider while it works; read by the orchestrator for receipts."""

    attempts: int = 0


@dataclass(slots=True)
class ProviderRequest:
    """What the provider is asked: the model, the messages, and the options to forward as-is."""

    model: str
    messages: list[dict[str, Any]]
    options: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, tools, ...
    include_usage: bool = False  # streaming: report token usage at the end
    stats: CallStats = field(default_factory=CallStats)


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) answer."""

    content: str | None
    model: str
    finish_reason: str = "stop"
    tool_calls: list[dict[str, Any]] | None = None
    usage: Usage | None = None


@dataclass(slots=True)
class StreamDelta:
    """One piece of a streamed answer. ``tool_calls`` items carry their ``index``.

    ``more`` says that further pieces arrived in the same network read and follow at once: the
    relay then writes them to the client together (one write instead of one per piece).
    """

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    more: bool = False


def arrived_together(batch: list[StreamDelta]) -> list[StreamDelta]:
    """Mark pieces parsed from one network read, so the relay writes them in one go."""
    for piece in batch[:-1]:
        piece.more = True
    return batch


@dataclass(frozen=True, slots=True)
class ModelCard:
    id: str
    owned_by: str
    created: int = 0


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    ok: bool
    reason: str = "ok"


@runtime_checkable
class LLMProvider(Protocol):
    """The port every provider adapter implements."""

    name: str

    async def complete(self, request: ProviderRequest) -> Completion:
        """Answer in one piece. Raise :class:`app.errors.OrchestratorError` subclasses on failure."""
        ...

    def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        """Answer piece by piece. Errors before the first piece must be raised, not yielded."""
        ...

    async def list_models(self) -> list[ModelCard]: ...

    async def health(self) -> ProviderHealth: ...

    async def aclose(self) -> None: ...
