"""Tool calls inside chat: a :class:`Generator` that runs the gateway's own tools for the model.

When a turn has ``gateway_tools`` (an agent's tools), they are offered to the model next to the
caller's own ``tools``. When the model calls gateway tools, the calls go through the
:class:`ToolRunner` (schema, policy, approval, sandbox), their results are fed back as ``tool``
messages, and the model is asked again, up to ``ORCH_MAX_TOOL_ROUNDS`` rounds of tool calls.

* A call that needs a person's approval ends the turn with an assistant message naming the
  pending approval id. Once approved, the same call (same tool, same arguments, same caller) goes
  through the next time the model makes it.
* Calls to the caller's own tools are returned to the caller untouched (OpenAI behaviour), whole
  or streamed. If the model calls both kinds at once, only the caller's calls are returned (the
  caller can only answer its own; the model calls the gateway's again on the next request).
* A call to any other name (invented, or a registered tool this turn was not given) is never
  run: the model is told ``unknown_tool:<name>``.
* A forced ``tool_choice`` (``required`` or a named function) applies to the first round only,
  then becomes ``auto``: otherwise the model could be forced into calling tools until the limit.

Without gateway tools this generator is the inner one (no extra work per request or piece).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from app.errors import InvalidRequest
from app.ids import new_id
from app.orchestrator.turn import Generator, Turn
from app.providers.base import Completion, ProviderRequest, StreamDelta, Usage
from app.tools.types import ToolResult, ToolRunner, approval_message

FORCING_CHOICES = ("required", "any")


def _tool_name(tool: Any) -> str | None:
    if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
        name = tool["function"].get("name")
        return name if isinstance(name, str) else None
    return None


def rounds_exhausted_message(rounds: int) -> str:
    return (
        f"I stopped after {rounds} rounds of tool calls (ORCH_MAX_TOOL_ROUNDS) without reaching a final "
        "answer. The tool results so far are in the receipt of this request."
    )


@dataclass
class _Plan:
    """One turn's tool conversation: the messages grow as tools are called and answered."""

    original: ProviderRequest
    gateway: frozenset[str]
    callers: frozenset[str]  # the caller's own tools: their calls go back to the caller
    messages: list[dict[str, Any]]
    options: dict[str, Any]
    usage: Usage | None = None
    last_result: ToolResult | None = None
    rounds: int = 0

    def request(self) -> ProviderRequest:
        return replace(self.original, messages=list(self.messages), options=dict(self.options))

    def add_usage(self, usage: Usage | None) -> None:
        if usage is None:
            return
        if self.usage is None:
            self.usage = Usage()
        self.usage.add(usage)

    def after_round(self) -> None:
        self.rounds += 1
        choice = self.options.get("tool_choice")
        if choice in FORCING_CHOICES or isinstance(choice, dict):
            self.options["tool_choice"] = "auto"


@dataclass
class _CallBuffer:
    """Streamed tool-call deltas assembled by ``index``."""

    calls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, deltas: list[dict[str, Any]]) -> None:
        for position, delta in enumerate(deltas):
            index = delta.get("index", position)
            call = self.calls.setdefault(
                index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if delta.get("id"):
                call["id"] = delta["id"]
            function = delta.get("function") or {}
            if function.get("name"):
                call["function"]["name"] += function["name"]
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                call["function"]["arguments"] += arguments
            elif arguments is not None:
                call["function"]["arguments"] += orjson.dumps(arguments).decode()

    def assembled(self) -> list[dict[str, Any]]:
        return [self.calls[index] for index in sorted(self.calls)]


class ToolLoopGenerator:
    """Wraps a generator (the provider) with the gateway's tool-call loop."""

    def __init__(self, inner: Generator, runner: ToolRunner, *, max_rounds: int) -> None:
        self.inner = inner
        self.runner = runner
        self.max_rounds = max_rounds

    def check(self, turn: Turn) -> None:
        """A caller's tool named like one the gateway runs is refused before the request is accepted."""
        if turn.gateway_tools:
            self._plan(turn)

    def _plan(self, turn: Turn) -> _Plan | None:
        offered = self.runner.openai_tools(list(turn.gateway_tools))
        if not offered:
            return None
        request = turn.request
        caller_tools = request.options.get("tools") or []
        if not isinstance(caller_tools, list):
            caller_tools = []
        gateway = frozenset(name for name in (_tool_name(t) for t in offered) if name)
        callers = frozenset(name for name in (_tool_name(t) for t in caller_tools) if name)
        clash = sorted(gateway & callers)
        if clash:
            raise InvalidRequest(
                f"The tool name {clash[0]!r} belongs to a tool the gateway runs for this request; rename your tool.",
                param="tools",
                code="tool_name_conflict",
            )
        options = dict(request.options)
        options["tools"] = [*caller_tools, *offered]
        return _Plan(
            original=request, gateway=gateway, callers=callers, messages=list(request.messages), options=options
        )

    # --- whole answers -----------------------------------------------------------------------
    async def complete(self, turn: Turn) -> Completion:
        plan = self._plan(turn) if turn.gateway_tools else None
        if plan is None:
            return await self.inner.complete(turn)
        try:
            while True:
                turn.request = plan.request()
                completion = await self.inner.complete(turn)
                plan.add_usage(completion.usage)
                calls = completion.tool_calls or []
                if not calls:
                    return self._final(completion, plan)
                mine = [call for call in calls if _call_name(call) in plan.callers]
                if mine:  # the caller's own tools: theirs to run
                    completion.tool_calls = _renumbered(mine)
                    completion.finish_reason = "tool_calls"
                    return self._final(completion, plan)
                if plan.rounds >= self.max_rounds:
                    return self._final(Completion(rounds_exhausted_message(plan.rounds), completion.model), plan)
                stop = await self._run_calls(turn, plan, completion.content, calls)
                if stop is not None:
                    return self._final(Completion(stop, completion.model), plan)
        finally:
            turn.request = plan.original

    def _final(self, completion: Completion, plan: _Plan) -> Completion:
        completion.usage = plan.usage or completion.usage
        return completion

    async def _run_calls(self, turn: Turn, plan: _Plan, content: str | None, calls: list[dict[str, Any]]) -> str | None:
        """Run one round of gateway calls and extend the conversation; a text ends the turn."""
        normalised: list[dict[str, Any]] = []
        for call in calls:
            function = call.get("function") or {}
            normalised.append(
                {
                    "id": call.get("id") or f"call_{new_id()[:24]}",
                    "type": "function",
                    "function": {"name": _call_name(call), "arguments": _arguments_text(function.get("arguments"))},
                }
            )
        turn.trace.step("tool_round", {"round": plan.rounds + 1, "tools": [c["function"]["name"] for c in normalised]})
        replies: list[dict[str, Any]] = []
        for call in normalised:
            name = call["function"]["name"]
            args = _parse_arguments(call["function"]["arguments"])
            if name not in plan.gateway:
                # Not offered here (invented, or a registered tool this turn does not own): never
                # run it; tell the model, as an unknown tool.
                result: ToolResult = {"status": "error", "tool": name, "error": f"unknown_tool:{name[:64]}"}
            elif args is None:
                result = {
                    "status": "error",
                    "tool": name,
                    "error": "validation_error",
                    "detail": "The arguments are not a JSON object.",
                }
            else:
                result = await self.runner.run(name, args, principal=turn.ctx.principal, trace=turn.trace)
            plan.last_result = result
            turn.decisions.tool_result = result
            if result.get("error") == "approval_required":
                return approval_message(result)
            shown = {key: value for key, value in result.items() if key != "trace_id"}
            replies.append({"role": "tool", "tool_call_id": call["id"], "content": orjson.dumps(shown).decode()})
        plan.messages.append({"role": "assistant", "content": content, "tool_calls": normalised})
        plan.messages.extend(replies)
        plan.after_round()
        return None

    # --- streams -----------------------------------------------------------------------------
    def stream(self, turn: Turn) -> AsyncIterator[StreamDelta]:
        plan = self._plan(turn) if turn.gateway_tools else None
        if plan is None:
            return self.inner.stream(turn)
        return self._stream(turn, plan)

    async def _stream(self, turn: Turn, plan: _Plan) -> AsyncIterator[StreamDelta]:
        try:
            while True:
                turn.request = plan.request()
                buffer = _CallBuffer()
                content: list[str] = []
                finish: str | None = None
                pieces = self.inner.stream(turn)
                try:
                    async for piece in pieces:
                        plan.add_usage(piece.usage)
                        if piece.tool_calls:
                            buffer.add(piece.tool_calls)
                        if piece.content:
                            content.append(piece.content)
                        if piece.content or piece.logprobs is not None or piece.system_fingerprint is not None:
                            # Text goes out as it comes, with what the upstream said about it.
                            yield StreamDelta(
                                content=piece.content or None,
                                logprobs=piece.logprobs,
                                system_fingerprint=piece.system_fingerprint,
                            )
                        finish = piece.finish_reason or finish
                finally:
                    aclose = getattr(pieces, "aclose", None)
                    if aclose is not None:
                        await aclose()
                calls = buffer.assembled()
                if not calls:
                    yield StreamDelta(finish_reason=finish or "stop", usage=plan.usage)
                    return
                mine = [call for call in calls if _call_name(call) in plan.callers]
                if mine:
                    yield StreamDelta(tool_calls=_renumbered(mine, with_index=True))
                    yield StreamDelta(finish_reason="tool_calls", usage=plan.usage)
                    return
                if plan.rounds >= self.max_rounds:
                    stop: str | None = rounds_exhausted_message(plan.rounds)
                else:
                    stop = await self._run_calls(turn, plan, "".join(content) or None, calls)
                if stop is not None:
                    yield StreamDelta(content=("\n\n" if content else "") + stop)
                    yield StreamDelta(finish_reason="stop", usage=plan.usage)
                    return
        finally:
            turn.request = plan.original


def _call_name(call: dict[str, Any]) -> str:
    function = call.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else ""


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments if arguments is not None else {}).decode()


def _parse_arguments(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _renumbered(calls: list[dict[str, Any]], *, with_index: bool = False) -> list[dict[str, Any]]:
    out = []
    for index, call in enumerate(calls):
        item = {key: value for key, value in call.items() if key != "index"}
        if not item.get("id"):
            item["id"] = f"call_{new_id()[:24]}"
        if with_index:
            item = {"index": index, **item}
        out.append(item)
    return out
