"""The LLM provider port.

A provider turns a :class:`ProviderRequest` (OpenAI-shaped messages plus the options to forward)
into a :class:`Completion`, or a stream of :class:`StreamDelta` pieces. The orchestrator owns
everything around it: ids, the wire format, output caps, receipts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# The most choices (`n`) one request may ask for: each is a whole generation (for Ollama, a request
# of its own), so n multiplies the load one caller puts on the model server.
MAX_CHOICES = 8


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # The upstream's breakdowns (cached tokens, reasoning tokens ...), passed on to the caller as
    # they came; receipts keep the three counts only.
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        """The three counts: what receipts record."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    def wire(self) -> dict[str, Any]:
        """What the caller gets: the counts and the upstream's details when it sent them."""
        usage: dict[str, Any] = self.as_dict()
        if self.prompt_tokens_details is not None:
            usage["prompt_tokens_details"] = self.prompt_tokens_details
        if self.completion_tokens_details is not None:
            usage["completion_tokens_details"] = self.completion_tokens_details
        return usage

    def add(self, other: Usage) -> None:
        """Count ``other`` in too (several upstream calls for one answer): counts and the numbers
        in the details are summed."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.prompt_tokens_details = _summed(self.prompt_tokens_details, other.prompt_tokens_details)
        self.completion_tokens_details = _summed(self.completion_tokens_details, other.completion_tokens_details)


def _summed(mine: dict[str, Any] | None, other: dict[str, Any] | None) -> dict[str, Any] | None:
    if mine is None or other is None:
        return mine if other is None else dict(other)
    summed = dict(mine)
    for key, value in other.items():
        here = summed.get(key)
        numbers = isinstance(value, int | float) and not isinstance(value, bool)
        if numbers and isinstance(here, int | float) and not isinstance(here, bool):
            summed[key] = here + value
        elif key not in summed:
            summed[key] = value
    return summed


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
    """A whole (non-streamed) answer: its first choice, and with ``n`` > 1 the others."""

    content: str | None
    model: str
    finish_reason: str = "stop"
    tool_calls: list[dict[str, Any]] | None = None
    usage: Usage | None = None
    logprobs: dict[str, Any] | None = None  # the choice's, in the OpenAI shape ({"content": [...]})
    system_fingerprint: str | None = None
    # Choices 1..n-1 when the request asked for n > 1 (their content, finish_reason, tool_calls and
    # logprobs; model and usage are the first's).
    others: list[Completion] = field(default_factory=list)


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
    index: int = 0  # the choice it belongs to (n > 1)
    logprobs: dict[str, Any] | None = None  # this piece's, in the OpenAI shape ({"content": [...]})
    system_fingerprint: str | None = None


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
