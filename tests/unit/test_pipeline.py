"""The chat pipeline driven directly, without HTTP: Orchestrator + stages + generator over the
scripted provider (tests/fakes/scripted_provider.py) and the recording tool runner."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from fastapi import FastAPI

from app.auth import ROLE_CALLER, Principal
from app.observability.metrics import Metrics
from app.orchestrator.service import Orchestrator, ProviderGenerator
from app.orchestrator.tool_loop import ToolLoopGenerator
from app.orchestrator.turn import CallContext, Generator, Stage, Turn
from app.policies import PolicySnapshot
from app.receipts.tracer import Tracer
from app.schemas.chat import ChatCompletionRequest
from tests.conftest import running
from tests.fakes.scripted_provider import Reply, ScriptedProvider, ToolCall, text, tool_call
from tests.fakes.tools import RecordingToolRunner

MODEL = "scripted-model"


class Answers:
    """A stage that answers every turn itself."""

    name = "answers"

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.seen: list[str] = []

    async def run(self, turn: Turn) -> None:
        self.seen.append(turn.request.messages[-1]["content"])
        turn.answer = self.answer
        turn.decisions.route_decision = {"route": "answers"}


class GatewayTools:
    """A stage that gives the turn tools the gateway runs (as the agent stage does)."""

    name = "gateway_tools"

    def __init__(self, tools: list[str]) -> None:
        self.tools = tools

    async def run(self, turn: Turn) -> None:
        turn.gateway_tools = list(self.tools)


class Never:
    """A stage placed after one that answers: it must not run."""

    name = "never"

    async def run(self, turn: Turn) -> None:
        raise AssertionError("a stage after a ready answer ran")


def orchestrator(
    provider: ScriptedProvider, stages: Sequence[Stage] = (), generator: Generator | None = None
) -> Orchestrator:
    metrics = Metrics()
    tracer = Tracer(None, redact_pii=True, flush_interval=1.0, queue_max=10, metrics=metrics)
    return Orchestrator(
        provider=provider,
        default_model=MODEL,
        model_allowlist=[],
        tracer=tracer,
        policies=PolicySnapshot(),
        stages=stages,
        generator=generator,
        metrics=metrics,
    )


def with_tools(provider: ScriptedProvider, runner: RecordingToolRunner, tools: list[str]) -> Orchestrator:
    loop = ToolLoopGenerator(ProviderGenerator(provider), runner, max_rounds=3)
    return orchestrator(provider, [GatewayTools(tools)], loop)


def chat(content: str, **fields: Any) -> tuple[ChatCompletionRequest, dict[str, Any]]:
    raw: dict[str, Any] = {"messages": [{"role": "user", "content": content}], **fields}
    return ChatCompletionRequest.model_validate(raw), raw


def ctx() -> CallContext:
    principal = Principal("owner", authenticated=True, roles=frozenset({ROLE_CALLER}))
    return CallContext(principal=principal, request_id="req-1", route="/v1/chat/completions")


async def streamed(orch: Orchestrator, content: str, **fields: Any) -> list[dict[str, Any]]:
    """The stream's chunks as JSON, checking that it ends with [DONE]."""
    request, raw = chat(content, stream=True, **fields)
    body = b"".join([part async for part in await orch.open_stream(request, raw, ctx())])
    events = [line[len(b"data: ") :] for line in body.split(b"\n\n") if line]
    assert events[-1] == b"[DONE]"
    return [orjson.loads(event) for event in events[:-1]]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"] if "delta" in choice
    )


async def test_the_plain_provider_answers_through_the_scripted_double() -> None:
    provider = ScriptedProvider([text("Hello there.")])
    request, raw = chat("hi", temperature=0.5)
    body = await orchestrator(provider).complete(request, raw, ctx())
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello there."}
    assert body["request_id"] == "req-1"
    assert provider.asked[0].options == {"temperature": 0.5}  # the gateway's own fields are not forwarded
    assert provider.asked[0].messages == [{"role": "user", "content": "hi"}]


async def test_a_stage_that_answers_skips_the_model_and_the_later_stages() -> None:
    provider = ScriptedProvider([])
    stage = Answers("Held for review.")
    orch = orchestrator(provider, [stage, Never()])
    request, raw = chat("delete everything")
    body = await orch.complete(request, raw, ctx())
    assert body["choices"][0]["message"]["content"] == "Held for review."
    assert body["route_decision"] == {"route": "answers"}
    assert stage.seen == ["delete everything"]
    assert provider.asked == []  # the model was never asked

    chunks = await streamed(orch, "delete everything")
    assert text_of(chunks) == "Held for review."
    assert chunks[0]["route_decision"] == {"route": "answers"}  # the decision fields ride on the first chunk
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert provider.asked == []


async def test_the_tool_loop_runs_a_scripted_tool_call_and_sends_the_result_back() -> None:
    provider = ScriptedProvider([tool_call("safe_calc", {"expression": "2+3"}, id="call_a"), text("It is 5.")])
    runner = RecordingToolRunner()
    request, raw = chat("what is 2+3?")
    body = await with_tools(provider, runner, ["safe_calc"]).complete(request, raw, ctx())

    assert body["choices"][0]["message"]["content"] == "It is 5."
    assert body["choices"][0]["finish_reason"] == "stop"
    assert [(call.name, call.args) for call in runner.calls] == [("safe_calc", {"expression": "2+3"})]
    assert body["tool_result"] == {"status": "ok", "tool": "safe_calc", "result": 5.0}
    first, second = provider.asked
    assert first.tool_names == ["safe_calc"]  # the loop offered the gateway's tool
    assistant, reply = second.messages[-2:]
    assert assistant["tool_calls"][0]["id"] == "call_a"
    assert reply["role"] == "tool" and reply["tool_call_id"] == "call_a"
    assert orjson.loads(reply["content"]) == {"status": "ok", "tool": "safe_calc", "result": 5.0}


async def test_a_caller_tool_call_streams_as_tool_call_deltas() -> None:
    """A tool the caller offered is theirs to run: its streamed deltas reach them, with their index."""
    calls = [ToolCall("lookup", {"city": "Oslo"}, "call_x"), ToolCall("lookup", {"city": "Bergen"}, "call_y")]
    provider = ScriptedProvider([Reply(content="Looking", tool_calls=calls)])
    caller_tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    chunks = await streamed(orchestrator(provider), "weather?", tools=caller_tools)

    assert text_of(chunks) == "Looking"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [
        call for chunk in chunks for choice in chunk["choices"] for call in choice["delta"].get("tool_calls") or []
    ]
    assembled: dict[int, dict[str, str]] = {}
    for delta in deltas:
        call = assembled.setdefault(delta["index"], {"id": "", "name": "", "arguments": ""})
        call["id"] += delta.get("id") or ""
        call["name"] += delta.get("function", {}).get("name") or ""
        call["arguments"] += delta.get("function", {}).get("arguments") or ""
    assert [(c["id"], c["name"], orjson.loads(c["arguments"])) for c in assembled.values()] == [
        ("call_x", "lookup", {"city": "Oslo"}),
        ("call_y", "lookup", {"city": "Bergen"}),
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert provider.closed_streams == 1


async def test_streamed_tool_call_deltas_are_assembled_run_and_answered() -> None:
    """The gateway's tool in a stream: the loop assembles the call from its deltas, runs it, and
    streams the model's next answer; the caller sees text only."""
    provider = ScriptedProvider(
        [tool_call("echo", {"message": "ping"}, id="call_e", content="Let me check. "), text("It said ping.")]
    )
    runner = RecordingToolRunner()
    chunks = await streamed(with_tools(provider, runner, ["echo"]), "echo ping")

    assert [(call.name, call.args) for call in runner.calls] == [("echo", {"message": "ping"})]
    assert text_of(chunks) == "Let me check. It said ping."
    assert not [chunk for chunk in chunks for choice in chunk["choices"] if choice["delta"].get("tool_calls")]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert [asked.stream for asked in provider.asked] == [True, True]
    tool_reply = provider.asked[1].messages[-1]
    assert tool_reply["tool_call_id"] == "call_e"
    assert orjson.loads(tool_reply["content"])["result"] == "Echo: ping"
    assert provider.closed_streams == 2


async def test_the_lifespan_assembles_the_stages_in_order(app_factory: Callable[..., FastAPI]) -> None:
    """The memory gate first, then the agent; routing only in advanced mode. The tool loop wraps
    the provider."""
    for mode, names in (("basic", ["memory", "agent"]), ("advanced", ["memory", "agent", "routing"])):
        app = app_factory(orchestrator_mode=mode)
        async with running(app):
            orch = app.state.orch.orchestrator
            assert [stage.name for stage in orch.stages] == names, mode
            assert isinstance(orch.generator, ToolLoopGenerator)
            assert isinstance(orch.generator.inner, ProviderGenerator)
