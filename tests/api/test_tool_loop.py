"""Tool calls inside chat, against a real local HTTP upstream scripted to call tools.

A test stage gives the turn gateway tools (what an agent does). The gateway runs the model's
calls to them (policy, approval, sandbox), feeds the results back and asks again; the caller's
own tools come back to the caller untouched, whole or streamed (checked with the openai client).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from openai import AsyncOpenAI

from app.lifespan import AppState
from tests.api.tools_support import APPROVAL_POLICY, APPROVER, APPROVER_HEADERS, GatewayTools, write_policy
from tests.conftest import TOKEN, assert_envelope, running
from tests.fakes.upstream import FakeUpstream, Reply, chunk, completion, fake_upstream

CHAT = "/v1/chat/completions"
ASK = {"model": "fake-model", "messages": [{"role": "user", "content": "What is 6*7?"}]}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def call(name: str, arguments: Any, call_id: str = "call_1") -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def calls(*items: dict[str, Any]) -> Reply:
    """The model answers with tool calls."""
    return Reply(body=completion("", message={"content": None, "tool_calls": list(items)}, finish_reason="tool_calls"))


def says(text: str) -> Reply:
    return Reply(body=completion(text))


def streamed_calls(name: str, arguments: str, call_id: str = "call_s1") -> Reply:
    """Tool-call deltas as OpenAI streams them: the name first, the arguments in pieces."""
    half = len(arguments) // 2
    return Reply(
        stream=[
            chunk({"role": "assistant", "content": None}),
            chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": {"name": name}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}),
            chunk({}, "tool_calls"),
        ]
    )


def streamed_text(*words: str) -> Reply:
    return Reply(
        stream=[chunk({"role": "assistant", "content": ""}), *(chunk({"content": w}) for w in words), chunk({}, "stop")]
    )


@asynccontextmanager
async def loop_app(
    app_factory: Callable[..., FastAPI], upstream: FakeUpstream, gateway: list[str], **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    values: dict[str, Any] = {
        "llm_enabled": True,
        "llm_provider": "openai",
        "openai_base_url": upstream.url,
        "model_chat": "fake-model",
        "trust_panel_enabled": True,
        "approver_token": APPROVER,
    }
    values.update(settings)
    app = app_factory(**values)
    async with running(app) as client:
        state: AppState = app.state.orch
        state.orchestrator.stages.append(GatewayTools(gateway))
        yield client, state


async def steps(client: httpx.AsyncClient, state: AppState, trace_id: str) -> list[dict[str, Any]]:
    await state.tracer.flush()
    found: list[dict[str, Any]] = (await client.get(f"/v1/trust/trace/{trace_id}")).json()["steps"]
    return found


def offered(request: dict[str, Any]) -> list[str]:
    return [tool["function"]["name"] for tool in request.get("tools", [])]


async def test_the_gateway_runs_the_models_tool_call_and_feeds_back_the_result(
    app_factory: Callable[..., FastAPI],
) -> None:
    async with (
        fake_upstream(calls(call("safe_calc", {"expression": "6*7"})), says("It is 42.")) as upstream,
        loop_app(app_factory, upstream, ["safe_calc", "text_stats"]) as (client, state),
    ):
        response = await client.post(CHAT, json=ASK)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"] == {"role": "assistant", "content": "It is 42."}
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["tool_result"]["status"] == "ok" and body["tool_result"]["result"] == 42
        assert body["usage"]["prompt_tokens"] == 14  # both rounds counted
        first, second = upstream.requests
        assert offered(first) == ["safe_calc", "text_stats"]
        assert first["messages"] == ASK["messages"]
        assistant, tool = second["messages"][1:]
        assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["id"] == "call_1"
        assert tool["role"] == "tool" and tool["tool_call_id"] == "call_1"
        fed = json.loads(tool["content"])
        assert fed["status"] == "ok" and fed["result"] == 42 and "trace_id" not in fed
        kinds = [s["step_type"] for s in await steps(client, state, body["request_id"])]
        assert kinds == ["request", "tool_round", "policy_snapshot", "tool_result", "llm_provider"]


async def test_streamed_with_the_openai_client(app_factory: Callable[..., FastAPI]) -> None:
    async with (
        fake_upstream(
            streamed_calls("safe_calc", '{"expression": "2**10/4"}'), streamed_text("The ", "answer ", "is ", "256.")
        ) as upstream,
        loop_app(app_factory, upstream, ["safe_calc"]) as (client, _),
    ):
        openai = AsyncOpenAI(base_url="http://testserver/v1", api_key=TOKEN, http_client=client)
        stream = await openai.chat.completions.create(model="fake-model", messages=ASK["messages"], stream=True)
        text, finishes, tool_deltas = [], [], []
        async for piece in stream:
            if not piece.choices:
                continue
            delta = piece.choices[0].delta
            text.append(delta.content or "")
            tool_deltas.extend(delta.tool_calls or [])
            if piece.choices[0].finish_reason:
                finishes.append(piece.choices[0].finish_reason)
        assert "".join(text) == "The answer is 256."
        assert tool_deltas == [] and finishes == ["stop"]
        fed = json.loads(upstream.requests[1]["messages"][-1]["content"])
        assert fed["result"] == 256


@pytest.mark.parametrize("stream", [False, True])
async def test_the_callers_own_tools_come_back_untouched(app_factory: Callable[..., FastAPI], stream: bool) -> None:
    reply = (
        streamed_calls("get_weather", '{"city": "Paris"}', "call_w")
        if stream
        else calls(call("get_weather", {"city": "Paris"}, "call_w"))
    )
    async with (
        fake_upstream(reply) as upstream,
        loop_app(app_factory, upstream, ["safe_calc"]) as (client, state),
    ):
        openai = AsyncOpenAI(base_url="http://testserver/v1", api_key=TOKEN, http_client=client)
        if stream:
            pieces = await openai.chat.completions.create(
                model="fake-model", messages=ASK["messages"], tools=[WEATHER], stream=True
            )
            deltas, finish = [], None
            async for piece in pieces:
                if piece.choices:
                    deltas.extend(piece.choices[0].delta.tool_calls or [])
                    finish = piece.choices[0].finish_reason or finish
            assert [d.function.name for d in deltas if d.function] == ["get_weather"]
            assert deltas[0].index == 0 and deltas[0].id == "call_w"
            assert "".join(d.function.arguments or "" for d in deltas if d.function) == '{"city": "Paris"}'
        else:
            answer = await openai.chat.completions.create(model="fake-model", messages=ASK["messages"], tools=[WEATHER])
            finish = answer.choices[0].finish_reason
            tool_calls = answer.choices[0].message.tool_calls or []
            assert [(c.id, c.function.name, c.function.arguments) for c in tool_calls] == [  # type: ignore[union-attr]
                ("call_w", "get_weather", '{"city": "Paris"}')
            ]
        assert finish == "tool_calls"
        assert len(upstream.requests) == 1  # nothing ran here: the caller runs its own tools
        assert offered(upstream.requests[0]) == ["get_weather", "safe_calc"]
        events = (await client.get("/v1/trust/events", params={"step_type": "tool_result"})).json()["events"]
        assert events == []
        del state


async def test_mixed_calls_return_only_the_callers(app_factory: Callable[..., FastAPI]) -> None:
    reply = calls(call("safe_calc", {"expression": "1"}, "c1"), call("get_weather", {"city": "Oslo"}, "c2"))
    async with (
        fake_upstream(reply) as upstream,
        loop_app(app_factory, upstream, ["safe_calc"]) as (client, _),
    ):
        body = (await client.post(CHAT, json={**ASK, "tools": [WEATHER]})).json()
    message = body["choices"][0]["message"]
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather"]
    assert body["choices"][0]["finish_reason"] == "tool_calls" and body["tool_result"] is None


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_that_needs_approval_ends_the_turn_naming_the_request(
    app_factory: Callable[..., FastAPI], tmp_path: Path, stream: bool
) -> None:
    policy = write_policy(tmp_path, APPROVAL_POLICY)
    wants = call("safe_calc", {"expression": "6*7"})
    script = (
        [streamed_calls("safe_calc", '{"expression": "6*7"}')] * 2 + [streamed_text("Done: 42.")]
        if stream
        else [calls(wants), calls(wants), says("Done: 42.")]
    )
    async with (
        fake_upstream(*script) as upstream,
        loop_app(app_factory, upstream, ["safe_calc"], tool_policy_path=policy) as (client, _),
    ):

        async def ask() -> str:
            response = await client.post(CHAT, json={**ASK, "stream": stream})
            assert response.status_code == 200
            if not stream:
                content: str = response.json()["choices"][0]["message"]["content"]
                return content
            events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            return "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])

        first = await ask()
        pending = (await client.get("/v1/tools/approvals", headers=APPROVER_HEADERS)).json()["data"]
        assert len(pending) == 1 and pending[0]["args"] == {"expression": "6*7"}
        approval_id = pending[0]["approval_id"]
        assert f"Approval request {approval_id} is pending" in first and "safe_calc" in first
        assert len(upstream.requests) == 1  # the turn ended there
        approved = await client.post(f"/v1/tools/approvals/{approval_id}/approve", headers=APPROVER_HEADERS)
        assert approved.status_code == 200
        assert await ask() == "Done: 42."  # the same call, from the same caller, now runs
        fed = json.loads(upstream.requests[2]["messages"][-1]["content"])
        assert fed["result"] == 42


async def test_rounds_are_bounded(app_factory: Callable[..., FastAPI]) -> None:
    async with (
        fake_upstream(calls(call("safe_calc", {"expression": "1+1"}))) as upstream,
        loop_app(app_factory, upstream, ["safe_calc"], max_tool_rounds=2) as (client, _),
    ):
        body = (await client.post(CHAT, json=ASK)).json()
    assert "stopped after 2 rounds of tool calls (ORCH_MAX_TOOL_ROUNDS)" in body["choices"][0]["message"]["content"]
    assert len(upstream.requests) == 3 and body["tool_result"]["result"] == 2


async def test_forced_tool_choice_applies_to_the_first_round_only(app_factory: Callable[..., FastAPI]) -> None:
    async with (
        fake_upstream(calls(call("safe_calc", {"expression": "3*3"})), says("9")) as upstream,
        loop_app(app_factory, upstream, ["safe_calc"]) as (client, _),
    ):
        body = (await client.post(CHAT, json={**ASK, "tool_choice": "required"})).json()
    assert body["choices"][0]["message"]["content"] == "9"
    assert [r["tool_choice"] for r in upstream.requests] == ["required", "auto"]


async def test_bad_arguments_from_the_model_are_fed_back(app_factory: Callable[..., FastAPI]) -> None:
    script = [calls(call("safe_calc", "{not json")), calls(call("safe_calc", {"expr": "1"})), says("Sorry.")]
    async with (
        fake_upstream(*script) as upstream,
        loop_app(app_factory, upstream, ["safe_calc"]) as (client, _),
    ):
        body = (await client.post(CHAT, json=ASK)).json()
    assert body["choices"][0]["message"]["content"] == "Sorry."
    first = json.loads(upstream.requests[1]["messages"][-1]["content"])
    second = json.loads(upstream.requests[2]["messages"][-1]["content"])
    assert first["error"] == "validation_error" and "JSON object" in first["detail"]
    assert second["error"] == "validation_error" and "expression" in second["detail"]


async def test_a_caller_tool_may_not_shadow_a_gateway_tool(app_factory: Callable[..., FastAPI]) -> None:
    """Refused before the request is accepted: no call upstream, and a memory the message asked
    for is not stored (the answer says deny:error), streamed or not."""
    shadow = {"type": "function", "function": {"name": "safe_calc", "parameters": {"type": "object"}}}
    remember = {**ASK, "messages": [{"role": "user", "content": "remember that the boat is blue"}], "tools": [shadow]}
    memory = {"memory_enabled": True, "memory_capture_enabled": True, "memory_write_policy": "strict"}
    async with (
        fake_upstream(says("x")) as upstream,
        loop_app(app_factory, upstream, ["safe_calc"], **memory) as (client, _),
    ):
        for stream in (False, True):
            response = await client.post(CHAT, json={**remember, "stream": stream})
            error = assert_envelope(response, 400, param="tools")
            assert error["code"] == "tool_name_conflict"
            assert response.json()["memory_decision"]["reason"] == "deny:error"
        assert upstream.requests == []
        assert (await client.get("/v1/memory")).json()["data"] == []


async def test_without_gateway_tools_nothing_changes(app_factory: Callable[..., FastAPI]) -> None:
    async with (
        fake_upstream(says("plain")) as upstream,
        loop_app(app_factory, upstream, []) as (client, _),
    ):
        body = (await client.post(CHAT, json=ASK)).json()
    assert body["choices"][0]["message"]["content"] == "plain"
    assert "tools" not in upstream.requests[0]


async def test_tools_the_policy_never_allows_are_not_offered(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    policy = write_policy(tmp_path, "version: 1\nrules:\n  - id: c\n    tools: [safe_calc]\n    action: allow\n")
    async with (
        fake_upstream(says("ok")) as upstream,
        loop_app(app_factory, upstream, ["safe_calc", "text_stats", "no_such_tool"], tool_policy_path=policy) as (
            client,
            _,
        ),
    ):
        await client.post(CHAT, json=ASK)
    assert offered(upstream.requests[0]) == ["safe_calc"]


async def test_a_tool_the_turn_does_not_own_is_never_run(app_factory: Callable[..., FastAPI]) -> None:
    """The model names a registered tool it was not offered (text_stats), and an invented one."""
    script = [calls(call("text_stats", {"text": "x"}, "c1"), call("rm_rf", {}, "c2")), says("ok")]
    async with (
        fake_upstream(*script) as upstream,
        loop_app(app_factory, upstream, ["safe_calc"]) as (client, state),
    ):
        body = (await client.post(CHAT, json=ASK)).json()
        kinds = [s["step_type"] for s in await steps(client, state, body["request_id"])]
    assert body["choices"][0]["message"]["content"] == "ok"
    fed = [json.loads(m["content"]) for m in upstream.requests[1]["messages"] if m["role"] == "tool"]
    assert [f["error"] for f in fed] == ["unknown_tool:text_stats", "unknown_tool:rm_rf"]
    assert "tool_result" not in kinds and "policy_snapshot" not in kinds  # nothing reached the runner


async def test_holly_offers_her_tools_and_the_gateway_runs_them(app_factory: Callable[..., FastAPI]) -> None:
    """The shipped agent, not a test stage: Holly's prompt and tools reach the model, both ways."""
    async with fake_upstream(
        calls(call("safe_calc", {"expression": "6*7"})), says("6 * 7 = 42."), says("It is 42 again.")
    ) as upstream:
        values = {"llm_enabled": True, "llm_provider": "openai", "openai_base_url": upstream.url}
        app = app_factory(model_chat="fake-model", **values)
        async with running(app) as client:
            agent_route = await client.post("/v1/agents/holly/chat", json={"messages": ASK["messages"]})
            assert agent_route.status_code == 200, agent_route.text
            body = agent_route.json()
            assert body["agent"] == "Holly" and body["choices"][0]["message"]["content"] == "6 * 7 = 42."
            assert body["tool_result"]["result"] == 42
            # the OpenAI route addresses her too; she answers without a tool call this time
            openai_route = await client.post(CHAT, json={**ASK, "model": "agent:holly"})
            assert openai_route.status_code == 200, openai_route.text
            assert openai_route.json()["choices"][0]["message"]["content"] == "It is 42 again."
    first, second, third = upstream.requests
    for request in (first, third):
        assert request["messages"][0]["role"] == "system" and "You are Holly" in request["messages"][0]["content"]
        assert offered(request) == ["safe_calc"]
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool"]
    assert json.loads(second["messages"][-1]["content"])["result"] == 42
