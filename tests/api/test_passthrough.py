"""Fields the upstream returns reach the caller (`logprobs`, `system_fingerprint`, the usage
details) with n = 1 as with n > 1; the output cap holds per choice; receipts keep their shape (the
first choice, plus a count); n > 1 where the gateway gives one answer is a 400 naming `n`; an Ollama
fan-out that fails fails whole. Against real local upstreams (tests/fakes)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.lifespan import AppState
from app.main import create_app
from tests.api.tools_support import GatewayTools
from tests.conftest import assert_envelope, build_settings, running
from tests.e2e.test_passthrough_e2e import (
    COMPLETION_DETAILS,
    FINGERPRINT,
    PROMPT_DETAILS,
    expected_logprobs,
    stream_events,
    texts,
    whole_body,
)
from tests.fakes.ollama_front import serve
from tests.fakes.upstream import FakeUpstream, Reply, fake_upstream

CHAT = "/v1/chat/completions"
ASK = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def gateway(
    tmp: Path, *replies: Reply, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeUpstream, AppState]]:
    async with fake_upstream(*replies) as fake:
        values: dict[str, Any] = {
            "llm_enabled": True,
            "llm_provider": "openai",
            "openai_base_url": fake.url,
            "model_chat": "fake-model",
            "trust_panel_enabled": True,
        }
        values.update(settings)
        app = create_app(build_settings(tmp, **values))
        async with running(app) as client:
            yield client, fake, app.state.orch


def sse(text: str) -> list[Any]:
    events = [block.removeprefix("data: ") for block in text.strip().split("\n\n")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


async def provider_step(client: httpx.AsyncClient, state: AppState, trace_id: str) -> dict[str, Any]:
    await state.tracer.flush()
    steps = (await client.get(f"/v1/trust/trace/{trace_id}")).json()["steps"]
    [step] = [s for s in steps if s["step_type"] == "llm_provider"]
    payload: dict[str, Any] = step["payload"]
    return payload


async def test_one_choice_carries_logprobs_fingerprint_and_usage_details(tmp_path: Path) -> None:
    async with gateway(tmp_path, Reply(body=whole_body(1)), Reply(stream=stream_events(1))) as (client, fake, state):
        body = (await client.post(CHAT, json={**ASK, "logprobs": True, "top_logprobs": 2})).json()
        [words] = texts(1)
        assert body["system_fingerprint"] == FINGERPRINT
        assert body["choices"][0]["logprobs"]["content"] == expected_logprobs(words)
        assert body["usage"]["prompt_tokens_details"] == PROMPT_DETAILS
        assert body["usage"]["completion_tokens_details"] == COMPLETION_DETAILS
        # Receipts keep the three counts (the details are the upstream's business).
        step = await provider_step(client, state, body["request_id"])
        assert step["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
        assert "choices" not in step

        asked = {**ASK, "stream": True, "stream_options": {"include_usage": True}, "logprobs": True}
        events = sse((await client.post(CHAT, json=asked)).text)
    chunks = [e for e in events[:-1] if e["choices"]]
    assert all(c["system_fingerprint"] == FINGERPRINT for c in events[:-1])
    assert [e for c in chunks for e in (c["choices"][0].get("logprobs") or {}).get("content", [])] == (
        expected_logprobs(words)
    )
    assert events[-2]["usage"]["prompt_tokens_details"] == PROMPT_DETAILS
    assert all(sent["logprobs"] is True for sent in fake.requests)


async def test_the_output_cap_holds_per_choice_and_the_receipt_counts_choices(tmp_path: Path) -> None:
    settings = {"llm_max_output_chars": 4}
    async with gateway(tmp_path, Reply(body=whole_body(2)), Reply(stream=stream_events(2)), **settings) as (
        client,
        _,
        state,
    ):
        body = (await client.post(CHAT, json={**ASK, "n": 2})).json()
        assert [c["message"]["content"] for c in body["choices"]] == ["hi0 ", "hi1 "]
        assert [c["finish_reason"] for c in body["choices"]] == ["length", "length"]
        step = await provider_step(client, state, body["request_id"])
        assert step["choices"] == 2 and step["finish_reason"] == "length" and step["truncated"] is True
        events = sse((await client.post(CHAT, json={**ASK, "n": 2, "stream": True})).text)
    assert events[-1] == "[DONE]"
    text: dict[int, str] = {}
    finish: dict[int, str] = {}
    for event in events[:-1]:
        for choice in event["choices"]:
            text[choice["index"]] = text.get(choice["index"], "") + (choice["delta"].get("content") or "")
            if choice["finish_reason"]:
                finish[choice["index"]] = choice["finish_reason"]
    assert text == {0: "hi0 ", 1: "hi1 "} and finish == {0: "length", 1: "length"}


async def test_n_above_one_is_refused_where_the_gateway_gives_one_answer(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (client, fake, state):
        state.orchestrator.stages.append(GatewayTools(["safe_calc"]))
        for stream in (False, True):
            error = assert_envelope(await client.post(CHAT, json={**ASK, "n": 2, "stream": stream}), 400, param="n")
            assert error["code"] == "unsupported_n"
        assert (await client.post(CHAT, json=ASK)).status_code == 200  # n = 1 is fine there
    assert len(fake.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_an_ollama_fan_out_with_a_failing_request_fails_whole(tmp_path: Path, stream: bool) -> None:
    ok = Reply(stream=stream_events(1)) if stream else Reply(body=whole_body(1))
    broken = Reply(status=500, body={"error": {"message": "model crashed"}})
    async with fake_upstream(ok, broken, ok) as fake, serve(fake.url) as (_, front_url):
        app = create_app(build_settings(tmp_path, llm_enabled=True, llm_provider="ollama", ollama_url=front_url))
        async with running(app) as client:
            response = await client.post(CHAT, json={**ASK, "n": 3, "stream": stream})
            if response.status_code == 200:  # a healthy choice's first piece came before the failure
                assert stream
                events = sse(response.text)
                assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "upstream_500"
                assert events[-2]["request_id"]
            else:
                assert assert_envelope(response, 502)["code"] == "upstream_500"
                assert response.json()["request_id"]
            assert (await client.get("/health")).status_code == 200
    assert len(fake.requests) == 3


async def test_the_fields_come_back_through_the_gateways_tool_loop_too(tmp_path: Path) -> None:
    async with gateway(tmp_path, Reply(body=whole_body(1)), Reply(stream=stream_events(1))) as (client, _, state):
        state.orchestrator.stages.append(GatewayTools(["safe_calc"]))
        body = (await client.post(CHAT, json={**ASK, "logprobs": True})).json()
        assert body["system_fingerprint"] == FINGERPRINT and body["choices"][0]["logprobs"]["content"]
        assert body["usage"]["completion_tokens_details"] == COMPLETION_DETAILS
        asked = {**ASK, "stream": True, "logprobs": True, "stream_options": {"include_usage": True}}
        events = sse((await client.post(CHAT, json=asked)).text)
    [words] = texts(1)
    found = [e for c in events[:-1] if c["choices"] for e in (c["choices"][0].get("logprobs") or {}).get("content", [])]
    assert found == expected_logprobs(words)
    assert all(c["system_fingerprint"] == FINGERPRINT for c in events[:-1])
    assert events[-2]["usage"]["prompt_tokens_details"] == PROMPT_DETAILS
