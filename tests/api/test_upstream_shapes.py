"""Tool calls of the wrong shape from a real local upstream are its fault: 502
``provider_bad_response`` naming the field, with the request id, whole and streamed, on the agent
path (the gateway's tool loop) and the plain relay; never a 500. A property test puts arbitrary
JSON in every field of a tool call and of a chunk (and in the fields passed through: logprobs,
system_fingerprint, the usage details, a choice's index)."""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from app.lifespan import AppState
from app.main import create_app
from app.orchestrator.turn import Turn
from app.providers.base import StreamDelta
from app.providers.shapes import MAX_TOOL_CALL_INDEX
from tests.conftest import build_settings, running
from tests.fakes.upstream import FakeUpstream, Reply, chunk, completion, fake_upstream

CHAT = "/v1/chat/completions"
AGENT = "run the agent"  # a user message that gives the turn gateway tools (see AgentWhenAsked)


class AgentWhenAsked:
    """A test stage: the turn gets gateway tools (what an agent does) when the user says AGENT."""

    name = "test_agent_when_asked"

    async def run(self, turn: Turn) -> None:
        if turn.chat.last_user_text() == AGENT:
            turn.gateway_tools = ["safe_calc", "text_stats"]


def ask(text: str, *, stream: bool = False) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": text}], "stream": stream}


def good_call() -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": "safe_calc", "arguments": '{"expression": "1"}'}}


def whole(calls: Any) -> Reply:
    return Reply(body=completion("", message={"content": None, "tool_calls": calls}, finish_reason="tool_calls"))


def streamed(calls: Any, *, text_first: bool = False) -> Reply:
    events = [chunk({"role": "assistant", "content": "thinking " if text_first else None})]
    events += [chunk({"tool_calls": calls}), chunk({}, "tool_calls")]
    return Reply(stream=events, delay=0.02 if text_first else 0.0)


def sse(text: str) -> list[Any]:
    events = [block.removeprefix("data: ") for block in text.strip().split("\n\n")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


@asynccontextmanager
async def gateway(tmp: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FakeUpstream, AppState]]:
    async with fake_upstream() as fake:
        app = create_app(
            build_settings(
                tmp,
                llm_enabled=True,
                llm_provider="openai",
                openai_base_url=fake.url,
                model_chat="fake-model",
                llm_timeout_sec=5,
                max_tool_rounds=2,
                llm_circuit_max_failures=1_000_000,  # bad answers here must not open the breaker
                trust_panel_enabled=True,
            )
        )
        async with running(app) as client:
            state: AppState = app.state.orch
            state.orchestrator.stages.append(AgentWhenAsked())
            yield client, fake, state


def wrong(value: Any) -> list[dict[str, Any]]:
    """A list of one good call with ``value`` put at a dotted path."""
    path, new = value
    call = good_call()
    target = call
    *parents, last = path.split(".")
    for key in parents:
        target = target[key]
    target[last] = new
    return [call]


MALFORMED = {
    "function is a string": (wrong(("function", "safe_calc")), "tool_calls[0].function is a string"),
    "name is an int": (wrong(("function.name", 5)), "tool_calls[0].function.name is a number"),
    "id is an object": (wrong(("id", {"a": 1})), "tool_calls[0].id is an object"),
    "arguments is an array": (wrong(("function.arguments", [1])), "tool_calls[0].function.arguments is an array"),
    "tool_calls is an object": (good_call(), "tool_calls is an object"),
    "a call is a string": (["safe_calc"], "tool_calls[0] is a string"),
}
STREAMED_ONLY = {
    "index is a string": ([{**good_call(), "index": "0"}], "tool_calls[0].index is a string"),
    "index is a list": ([{**good_call(), "index": [0]}], "tool_calls[0].index is an array"),
    "index is a boolean": ([{**good_call(), "index": True}], "tool_calls[0].index is a boolean"),
    "index is negative": ([{**good_call(), "index": -1}], "tool_calls[0].index is out of range"),
    "index is huge": ([{**good_call(), "index": MAX_TOOL_CALL_INDEX}], "tool_calls[0].index is out of range"),
}


def assert_bad_response(body: dict[str, Any], field: str) -> None:
    assert body["error"]["type"] == "provider_error", body
    assert body["error"]["code"] == "provider_bad_response", body
    assert field in body["error"]["message"], body
    assert body["request_id"], body


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_whole_tool_call_is_502_naming_the_field(tmp_path: Path, case: str) -> None:
    calls, field = MALFORMED[case]
    async with gateway(tmp_path) as (client, fake, state):
        for text in (AGENT, "plain relay"):
            fake.script = [whole(copy.deepcopy(calls))]
            response = await client.post(CHAT, json=ask(text))
            assert response.status_code == 502, response.text
            assert_bad_response(response.json(), "choices[0].message." + field)
            # The id names the receipt, which records the failure.
            await state.tracer.flush()
            steps = (await client.get(f"/v1/trust/trace/{response.json()['request_id']}")).json()["steps"]
            errors = [step for step in steps if step["step_type"] == "error"]
            assert errors and errors[0]["payload"]["code"] == "provider_bad_response", steps


@pytest.mark.parametrize("case", sorted({**MALFORMED, **STREAMED_ONLY}))
async def test_a_malformed_streamed_tool_call_is_502_before_or_in_band_after_the_first_byte(
    tmp_path: Path, case: str
) -> None:
    calls, field = {**MALFORMED, **STREAMED_ONLY}[case]
    field = "choices[0].delta." + field
    async with gateway(tmp_path) as (client, fake, _):
        # The tool loop reads the whole round before it answers: a real status.
        fake.script = [streamed(copy.deepcopy(calls))]
        response = await client.post(CHAT, json=ask(AGENT, stream=True))
        assert response.status_code == 502, response.text
        assert_bad_response(response.json(), field)
        # After text went out (agent path and relay): an in-band error event, then [DONE].
        for text in (AGENT, "plain relay"):
            fake.script = [streamed(copy.deepcopy(calls), text_first=True)]
            response = await client.post(CHAT, json=ask(text, stream=True))
            assert response.status_code == 200
            events = sse(response.text)
            assert events[-1] == "[DONE]"
            assert_bad_response(events[-2], field)
            assert events[-2]["request_id"] == events[0]["request_id"]


async def test_a_huge_value_is_never_echoed(tmp_path: Path) -> None:
    secretish = "x" * 200_000
    async with gateway(tmp_path) as (client, fake, _):
        fake.script = [whole(wrong(("function.name", {"big": secretish})))]
        response = await client.post(CHAT, json=ask(AGENT))
    assert response.status_code == 502
    assert "xxxx" not in response.text and len(response.content) < 2000


async def test_well_formed_variants_still_work(tmp_path: Path) -> None:
    """Arguments sent as an object (some servers do) and a streamed call without an index are
    accepted: the object becomes its JSON text, the call takes its list position."""
    as_object = wrong(("function.arguments", {"expression": "6*7"}))
    no_index = [{key: value for key, value in good_call().items()}]
    async with gateway(tmp_path) as (client, fake, _):
        fake.script = [whole(as_object), Reply(body=completion("It is 42."))]
        response = await client.post(CHAT, json=ask(AGENT))
        assert response.status_code == 200, response.text
        assert response.json()["tool_result"]["result"] == 42
        fake.script = [whole(as_object)]
        relayed = await client.post(CHAT, json=ask("plain relay"))
        assert relayed.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == (
            '{"expression":"6*7"}'
        )
        fake.script = [streamed(no_index)]
        events = sse((await client.post(CHAT, json=ask("plain relay", stream=True))).text)
        assert [c["index"] for e in events[:-1] for c in e["choices"][0]["delta"].get("tool_calls", [])] == [0]


# --- property: arbitrary JSON in any field never gives a 500 ------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
# Dotted paths into a whole answer and into a tool-call chunk ("-" deletes the field instead).
WHOLE_PATHS = [
    "choices",
    "choices.0",
    "choices.0.message",
    "choices.0.message.content",
    "choices.0.message.tool_calls",
    "choices.0.message.tool_calls.0",
    "choices.0.message.tool_calls.0.id",
    "choices.0.message.tool_calls.0.type",
    "choices.0.message.tool_calls.0.function",
    "choices.0.message.tool_calls.0.function.name",
    "choices.0.message.tool_calls.0.function.arguments",
    "choices.0.finish_reason",
    "choices.0.logprobs",
    "usage",
    "usage.prompt_tokens_details",
    "usage.completion_tokens_details",
    "system_fingerprint",
    "model",
]
CHUNK_PATHS = [
    "choices",
    "choices.0",
    "choices.0.delta",
    "choices.0.delta.content",
    "choices.0.delta.tool_calls",
    "choices.0.delta.tool_calls.0",
    "choices.0.delta.tool_calls.0.index",
    "choices.0.delta.tool_calls.0.id",
    "choices.0.delta.tool_calls.0.type",
    "choices.0.delta.tool_calls.0.function",
    "choices.0.delta.tool_calls.0.function.name",
    "choices.0.delta.tool_calls.0.function.arguments",
    "choices.0.finish_reason",
    "choices.0.index",
    "choices.0.logprobs",
    "usage",
    "system_fingerprint",
]


def put(document: Any, path: str, value: Any, delete: bool) -> Any:
    *parents, last = path.split(".")
    target = document
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    key_: Any = int(last) if isinstance(target, list) else last
    if delete and isinstance(target, dict):
        target.pop(key_, None)
    elif delete:
        del target[key_]
    else:
        target[key_] = value
    return document


def whole_answer() -> dict[str, Any]:
    return completion("", message={"content": None, "tool_calls": [good_call()]}, finish_reason="tool_calls")


def call_chunk() -> dict[str, Any]:
    return chunk({"tool_calls": [{"index": 0, **good_call()}]})


CASE = st.tuples(
    st.booleans(),  # streamed
    st.booleans(),  # agent path (the tool loop) or the plain relay
    st.integers(0, 10**6),  # which path (modulo the list)
    st.booleans(),  # delete the field instead
    JSON,
)


async def _never_500(cases: list[tuple[bool, bool, int, bool, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with gateway(Path(tmp)) as (client, fake, _):
            for is_stream, agent, which, delete, value in cases:
                if is_stream:
                    path = CHUNK_PATHS[which % len(CHUNK_PATHS)]
                    bad = put(call_chunk(), path, value, delete)
                    first = chunk({"role": "assistant", "content": "a "})
                    fake.script = [Reply(stream=[first, bad, chunk({}, "stop")])]
                else:
                    path = WHOLE_PATHS[which % len(WHOLE_PATHS)]
                    fake.script = [Reply(body=put(whole_answer(), path, value, delete))]
                # The next round of the tool loop (the model is asked again after a tool ran).
                fake.script.append(Reply(stream=[chunk({}, "stop")]) if is_stream else Reply(body=completion("done")))
                response = await client.post(CHAT, json=ask(AGENT if agent else "plain relay", stream=is_stream))
                where = f"{'stream' if is_stream else 'whole'} {path} {'deleted' if delete else repr(value)[:80]}"
                assert response.status_code != 500, where
                if response.status_code != 200:
                    body = response.json()
                    assert body["error"]["code"] == "provider_bad_response", (where, body)
                    assert body["request_id"], where
                    continue
                if is_stream:
                    events = sse(response.text)
                    assert events[-1] == "[DONE]", where
                    errors = [e for e in events[:-1] if "error" in e]
                    for error in errors:
                        assert error["error"]["code"] == "provider_bad_response", (where, error)
                        assert error["request_id"], where


# Shrinking replays whole batches through a live app (minutes); the assertion names the failing case.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=[Phase.generate])
@given(cases=st.lists(CASE, min_size=8, max_size=12))
def test_arbitrary_json_in_any_tool_call_field_is_never_a_500(cases: list[tuple[bool, bool, int, bool, Any]]) -> None:
    asyncio.run(_never_500(cases))


# --- the Ollama provider: the same checks on Ollama's native shapes -----------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_ollama_tool_calls_of_the_wrong_shape_are_502_naming_the_field(tmp_path: Path, stream: bool) -> None:
    from tests.api.test_ollama_recorded import Recording, recorded_ollama

    message = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": 5, "arguments": {}}}]}
    line = {"model": "llama3.2", "created_at": "2025-01-01T00:00:00Z", "message": message, "done": not stream}
    async with recorded_ollama() as fake:
        fake.chat = Recording(200, "application/x-ndjson", [json.dumps(line).encode() + b"\n"])
        app = create_app(build_settings(tmp_path, llm_enabled=True, llm_provider="ollama", ollama_url=fake.url))
        async with running(app) as client:
            state: AppState = app.state.orch
            state.orchestrator.stages.append(AgentWhenAsked())
            response = await client.post(CHAT, json=ask(AGENT, stream=stream))
    assert response.status_code == 502, response.text
    assert_bad_response(response.json(), "message.tool_calls[0].function.name is a number")


async def test_a_failure_of_ours_after_the_first_byte_still_names_the_request(tmp_path: Path) -> None:
    """Not the upstream's fault (a bug): the in-band error is internal_error, with the request id."""

    class Breaks:
        def check(self, turn: Turn) -> None:
            return None

        async def complete(self, turn: Turn) -> Any:
            raise AssertionError("not used")

        async def stream(self, turn: Turn) -> AsyncIterator[StreamDelta]:
            yield StreamDelta(content="partial ")
            raise RuntimeError("a bug")

    async with gateway(tmp_path) as (client, _, state):
        state.orchestrator.generator = Breaks()
        events = sse((await client.post(CHAT, json=ask("plain relay", stream=True))).text)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "internal_error" and "a bug" not in json.dumps(events[-2])
    assert events[-2]["request_id"] == events[0]["request_id"]


async def test_a_failure_of_ours_before_the_first_byte_is_a_500_naming_the_request(tmp_path: Path) -> None:
    class Breaks:
        def check(self, turn: Turn) -> None:
            return None

        async def complete(self, turn: Turn) -> Any:
            raise RuntimeError("secret internal detail")

        async def stream(self, turn: Turn) -> AsyncIterator[StreamDelta]:
            raise RuntimeError("secret internal detail")
            yield StreamDelta()  # an async generator

    async with gateway(tmp_path) as (client, _, state):
        state.orchestrator.generator = Breaks()
        for stream in (False, True):
            response = await client.post(CHAT, json=ask("plain relay", stream=stream))
            assert response.status_code == 500, response.text
            body = response.json()
            assert body["error"]["code"] == "internal_error" and "secret" not in response.text
            await state.tracer.flush()
            steps = (await client.get(f"/v1/trust/trace/{body['request_id']}")).json()["steps"]
            assert [s["payload"]["code"] for s in steps if s["step_type"] == "error"] == ["RuntimeError"]
