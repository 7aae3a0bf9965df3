"""The chat pipeline's contract: what a stage and a generator are given and what they implement.

A request becomes a :class:`Turn`; the configured :class:`Stage`\\s run in order (the memory gate,
the agent, routing ...), each reading and changing the turn: the messages the model will see, the
model, the decision fields, or a ready answer that skips the model. Then the :class:`Generator`
produces the answer (the provider, wrapped by the tool loop when tools are on).

Only dataclasses and Protocols live here, nothing that does I/O: feature packages (memory, routing,
agents, tools, the tool loop) import the contract from this module and never the pipeline that
runs it (:mod:`app.orchestrator.service`), so the arrows point from the pipeline to the features.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from app.auth import Principal
    from app.orchestrator.disconnect import CallerGone
    from app.providers.base import Completion, ProviderRequest, StreamDelta
    from app.receipts.tracer import Trace
    from app.schemas.chat import ChatCompletionRequest


@dataclass(slots=True)
class CallContext:
    """Who is asking and how this request is identified."""

    principal: Principal
    request_id: str  # the caller's X-Request-ID (sanitised) or a generated one
    route: str
    conversation_id: str | None = None
    agent: str | None = None  # set by the agent chat route
    debug: bool = False  # ?debug=1: expose decision details
    metadata: dict[str, str] | None = None  # X-Orch-Meta-* headers, for routing conditions
    # The wire face's "the caller has gone away" signal: the upstream call is stopped when it fires.
    caller_gone: CallerGone | None = None


@dataclass(slots=True)
class Decisions:
    """The orchestrator fields returned next to the completion (null until a stage fills them)."""

    request_id: str
    memory_decision: dict[str, Any] | None = None
    route_decision: dict[str, Any] | None = None
    model_decision: dict[str, Any] | None = None
    tool_result: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. "agent", "intent_decision"

    def as_dict(self) -> dict[str, Any]:
        fields = {
            "request_id": self.request_id,
            "memory_decision": self.memory_decision,
            "route_decision": self.route_decision,
            "model_decision": self.model_decision,
            "tool_result": self.tool_result,
        }
        if self.extra:
            fields.update(self.extra)
        return fields


@dataclass(slots=True)
class Turn:
    """One chat request on its way through the pipeline. Stages read and change it."""

    chat: ChatCompletionRequest
    ctx: CallContext
    trace: Trace
    request: ProviderRequest  # what the model will be asked; stages may replace its messages or model
    decisions: Decisions
    answer: str | None = None  # set by a stage that answers without the model (a tool route, a hold)
    # Tools the gateway itself runs when the model calls them (an agent's tools); the caller's own
    # `tools` in the request are passed through to the caller untouched.
    gateway_tools: list[str] = field(default_factory=list)
    # The memory gate's recall message, if any: an agent that replaces system prompts keeps it.
    memory_message: dict[str, Any] | None = None
    # Run once every stage has accepted the request (a memory is written only then) ...
    after_stages: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # ... or, when a stage refused it, instead of those.
    on_abort: list[Callable[[], None]] = field(default_factory=list)

    @property
    def stream(self) -> bool:
        return self.chat.stream


class Stage(Protocol):
    """One step before generation (memory gate, agent prompt, routing ...)."""

    name: str

    async def run(self, turn: Turn) -> None:
        """Read and change ``turn``; set ``turn.answer`` to answer without the model."""
        ...


class Generator(Protocol):
    """Produces the answer of a turn: the provider, possibly wrapped (the tool loop)."""

    def check(self, turn: Turn) -> None:
        """Refuse a turn it cannot answer (an OrchestratorError), before the stages' after-hooks
        run: a request refused here stores nothing (e.g. no memory)."""

    async def complete(self, turn: Turn) -> Completion: ...

    def stream(self, turn: Turn) -> AsyncIterator[StreamDelta]: ...
