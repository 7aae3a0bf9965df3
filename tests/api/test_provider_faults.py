"""The OpenAI-compatible provider against a real local HTTP upstream we control: forwarding,
error mapping, retries, the circuit breaker, timeouts, broken streams, the output cap."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import assert_envelope, running
from tests.fakes.upstream import FakeUpstream, Reply, chunk, completion, fake_upstream, gzip_bomb, text_chunks

CHAT = "/v1/chat/completions"
HELLO = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def gateway(
    app_factory: Callable[..., FastAPI], *replies: Reply, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeUpstream]]:
    async with fake_upstream(*replies) as fake:
        values = {
            "llm_enabled": True,
            "llm_provider": "openai",
            "openai_base_url": fake.url,
            "llm_timeout_sec": 5,
        }
        values.update(settings)
        async with running(app_factory(**values)) as client:
            yield client, fake


def sse(text: str) -> list[Any]:
    events = [block.removeprefix("data: ") for block in text.strip().split("\n\n")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


async def test_request_fields_are_forwarded_and_tool_calls_come_back_intact(
    app_factory: Callable[..., FastAPI],
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    reply = Reply(body=completion(None, message={"tool_calls": [call]}, finish_reason="tool_calls"))
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    body = {
        **HELLO,
        "temperature": 0.3,
        "max_tokens": 12,
        "stop": ["\n\n"],
        "seed": 7,
        "tools": tools,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "logit_bias": {"42": -1},
    }
    async with gateway(app_factory, reply, openai_api_key="upstream-key-123") as (client, fake):
        response = await client.post(CHAT, json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["choices"][0]["message"]["tool_calls"] == [call]
    assert data["choices"][0]["finish_reason"] == "tool_calls"
    assert data["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    [sent] = fake.requests
    for key in ("temperature", "max_tokens", "stop", "seed", "tools", "tool_choice", "response_format", "logit_bias"):
        assert sent[key] == body[key], key
    assert sent["model"] == "fake-model" and sent["messages"] == body["messages"]
    assert "stream" not in sent


async def test_streamed_tool_call_deltas_keep_their_index(app_factory: Callable[..., FastAPI]) -> None:
    events = [
        chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}
                ],
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({}, "tool_calls"),
    ]
    async with gateway(app_factory, Reply(stream=events)) as (client, fake):
        response = await client.post(CHAT, json={**HELLO, "stream": True})
    chunks = sse(response.text)
    assert chunks[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1] if c["choices"]]
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert [c["index"] for c in calls] == [0, 0, 1, 0]
    assert "".join(c["function"].get("arguments", "") for c in calls if c["index"] == 0) == '{"a":1}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert fake.requests[0]["stream"] is True
    assert fake.requests[0]["stream_options"] == {"include_usage": True}


async def test_stream_relays_text_and_usage_only_when_asked(app_factory: Callable[..., FastAPI]) -> None:
    words = ["Hello ", "there ", "friend."]
    async with gateway(app_factory, Reply(stream=text_chunks(words))) as (client, _):
        plain = sse((await client.post(CHAT, json={**HELLO, "stream": True})).text)
        with_usage = sse(
            (await client.post(CHAT, json={**HELLO, "stream": True, "stream_options": {"include_usage": True}})).text
        )
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in plain[:-1])
    assert text == "".join(words)
    assert plain[0]["choices"][0]["delta"]["role"] == "assistant"
    assert not any("usage" in c for c in plain[:-1])
    assert with_usage[-2]["choices"] == [] and with_usage[-2]["usage"]["completion_tokens"] == 3


async def test_upstream_500_is_502_and_not_retried(app_factory: Callable[..., FastAPI]) -> None:
    reply = Reply(status=500, body={"error": {"message": "model crashed", "type": "server_error"}})
    async with gateway(app_factory, reply, llm_retry_count=2, llm_retry_backoff_sec=0.01) as (client, fake):
        response = await client.post(CHAT, json=HELLO)
        error = assert_envelope(response, 502, type_="provider_error")
    assert error["code"] == "upstream_500" and "model crashed" in error["message"]
    assert len(fake.requests) == 1
    assert response.headers["x-should-retry"] == "false"  # nor by the OpenAI SDKs, which honour this


async def test_503_is_retried_with_backoff_then_succeeds(app_factory: Callable[..., FastAPI]) -> None:
    replies = (Reply(status=503), Reply(status=503), Reply(body=completion("finally")))
    async with gateway(app_factory, *replies, llm_retry_count=2, llm_retry_backoff_sec=0.01) as (client, fake):
        response = await client.post(CHAT, json=HELLO)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "finally"
    assert len(fake.requests) == 3


async def test_retries_give_up_after_the_configured_count(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(app_factory, Reply(status=502), llm_retry_count=1, llm_retry_backoff_sec=0.01) as (client, fake):
        error = assert_envelope(await client.post(CHAT, json=HELLO), 502, type_="provider_error")
    assert error["code"] == "upstream_502" and len(fake.requests) == 2


async def test_429_retry_after_is_honoured(app_factory: Callable[..., FastAPI]) -> None:
    replies = (Reply(status=429, headers={"Retry-After": "1"}), Reply(body=completion("after the wait")))
    async with gateway(app_factory, *replies, llm_retry_count=1, llm_retry_backoff_sec=0.01) as (client, fake):
        started = time.monotonic()
        response = await client.post(CHAT, json=HELLO)
        waited = time.monotonic() - started
    assert response.status_code == 200 and len(fake.requests) == 2
    assert waited >= 1.0  # the upstream asked for a second; backoff alone would be ~10 ms


async def test_429_without_retries_passes_through_with_retry_after(app_factory: Callable[..., FastAPI]) -> None:
    reply = Reply(status=429, headers={"Retry-After": "7"}, body={"error": {"message": "slow down", "type": "rate"}})
    async with gateway(app_factory, reply) as (client, _):
        response = await client.post(CHAT, json=HELLO)
    error = assert_envelope(response, 429, type_="rate_limit_error")
    assert error["message"] == "slow down" and response.headers["retry-after"] == "7"


async def test_upstream_4xx_passes_status_and_message_through(app_factory: Callable[..., FastAPI]) -> None:
    bad = Reply(
        status=400,
        body={
            "error": {
                "message": "context too long",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    )
    async with gateway(app_factory, bad) as (client, _):
        error = assert_envelope(await client.post(CHAT, json=HELLO), 400, type_="invalid_request_error")
    assert error == {
        "message": "context too long",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    async with gateway(app_factory, Reply(status=404, body={"error": "model 'x' not found"})) as (client, _):
        error = assert_envelope(await client.post(CHAT, json=HELLO), 404)
    assert error["message"] == "model 'x' not found"


async def test_upstream_auth_failure_is_our_502_not_the_callers_401(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(app_factory, Reply(status=401, body={"error": {"message": "bad key"}})) as (client, _):
        error = assert_envelope(await client.post(CHAT, json=HELLO), 502, type_="provider_error")
    assert error["code"] == "upstream_auth_failed" and "ORCH_OPENAI_API_KEY" in error["message"]


async def test_connection_refused_is_502_unreachable(app_factory: Callable[..., FastAPI]) -> None:
    settings = {
        "llm_enabled": True,
        "llm_provider": "openai",
        "openai_base_url": "http://127.0.0.1:9/v1",
        "llm_retry_count": 1,
        "llm_retry_backoff_sec": 0.01,
    }
    async with running(app_factory(**settings)) as client:
        error = assert_envelope(await client.post(CHAT, json=HELLO), 502, type_="provider_error")
        assert error["code"] == "provider_unreachable"
        assert "127.0.0.1" not in error["message"]  # no internals (addresses) in the body
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["reason"] == "provider_unreachable"


async def test_a_hang_past_the_timeout_is_504(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(app_factory, Reply(hang=True), llm_timeout_sec=0.5) as (client, fake):
        started = time.monotonic()
        response = await client.post(CHAT, json=HELLO)
        error = assert_envelope(response, 504, type_="provider_error")
        assert time.monotonic() - started < 4
    assert error["code"] == "provider_timeout" and len(fake.requests) == 1
    assert response.headers["x-should-retry"] == "false"


async def test_a_reset_mid_stream_ends_with_an_in_band_error_then_done(
    app_factory: Callable[..., FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    reply = Reply(stream=text_chunks(["one ", "two ", "three ", "four "]), reset_after=3)
    async with gateway(app_factory, reply) as (client, _):
        response = await client.post(CHAT, json={**HELLO, "stream": True})
        page = (await client.get("/metrics")).text
    assert response.status_code == 200
    # The 200 says nothing of the failure: it is counted and logged on its own.
    assert re.search(r'orch_stream_errors_total\{code="[a-z_]+"\} 1\.0', page), page
    warnings = [r for r in caplog.records if r.getMessage() == "stream ended with an error after its first byte"]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    events = sse(response.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["type"] == "provider_error"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert text == "one two "


async def test_a_slow_drip_is_not_a_timeout(app_factory: Callable[..., FastAPI]) -> None:
    reply = Reply(stream=text_chunks(["a ", "b ", "c ", "d "]), delay=0.3)
    async with gateway(app_factory, reply, llm_timeout_sec=1) as (client, _):
        response = await client.post(CHAT, json={**HELLO, "stream": True})
    events = sse(response.text)
    assert events[-1] == "[DONE]" and not any("error" in e for e in events[:-1] if isinstance(e, dict))
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]) == "a b c d "


async def test_circuit_breaker_opens_fails_fast_then_probes(app_factory: Callable[..., FastAPI]) -> None:
    replies = (Reply(status=500), Reply(status=500), Reply(body=completion("recovered")))
    settings = {"llm_circuit_max_failures": 2, "llm_circuit_reset_sec": 1}
    async with gateway(app_factory, *replies, **settings) as (client, fake):
        for _ in range(2):
            assert (await client.post(CHAT, json=HELLO)).status_code == 502
        response = await client.post(CHAT, json=HELLO)
        error = assert_envelope(response, 503, type_="circuit_open")
        assert 1 <= int(response.headers["retry-after"]) <= 2
        assert len(fake.requests) == 2  # failed fast: the upstream was not called
        await asyncio.sleep(1.1)
        probe = await client.post(CHAT, json=HELLO)
        assert probe.status_code == 200 and probe.json()["choices"][0]["message"]["content"] == "recovered"
        assert (await client.post(CHAT, json=HELLO)).status_code == 200
    assert error["code"] == "circuit_open" and len(fake.requests) == 4


async def test_output_cap_truncates_whole_and_streamed_replies(app_factory: Callable[..., FastAPI]) -> None:
    long = "x" * 50
    replies = (Reply(body=completion(long)), Reply(stream=text_chunks(["abcdefgh"] * 10)))
    async with gateway(app_factory, *replies, llm_max_output_chars=20) as (client, _):
        whole = (await client.post(CHAT, json=HELLO)).json()
        streamed = sse((await client.post(CHAT, json={**HELLO, "stream": True})).text)
    assert whole["choices"][0]["message"]["content"] == "x" * 20
    assert whole["choices"][0]["finish_reason"] == "length"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in streamed[:-1])
    assert text == ("abcdefgh" * 3)[:20]
    assert streamed[-2]["choices"][0]["finish_reason"] == "length" and streamed[-1] == "[DONE]"


async def test_model_allowlist_and_default_model(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(app_factory, Reply(), llm_model_allowlist=["fake-model", "other"], model_chat="other") as (
        client,
        fake,
    ):
        error = assert_envelope(await client.post(CHAT, json={**HELLO, "model": "gpt-9"}), 400, param="model")
        assert "gpt-9" in error["message"] and error["code"] == "model_not_allowed"
        assert (await client.post(CHAT, json={"messages": HELLO["messages"]})).status_code == 200
        # /v1/models lists only what a request may name
        listed = [{"id": name, "object": "model", "created": 1, "owned_by": "fake"} for name in ("gpt-9", "other")]
        fake.models_body = json.dumps({"object": "list", "data": listed}).encode()
        assert [m["id"] for m in (await client.get("/v1/models")).json()["data"]] == ["other"]
        assert_envelope(await client.get("/v1/models/gpt-9"), 404)
    assert [r["model"] for r in fake.requests] == ["other"]


async def test_models_are_listed_from_the_upstream_and_cached(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(app_factory) as (client, fake):
        for _ in range(3):
            response = await client.get("/v1/models")
            assert [m["id"] for m in response.json()["data"]] == ["fake-model"]
        assert (await client.get("/v1/models/fake-model")).json()["owned_by"] == "fake"
    assert fake.model_requests == 1


async def test_non_loopback_upstream_needs_the_network_flag(app_factory: Callable[..., FastAPI]) -> None:
    settings = {"llm_enabled": True, "llm_provider": "openai", "openai_base_url": "http://10.255.255.1:8080/v1"}
    async with running(app_factory(**settings)) as client:
        started = time.monotonic()
        error = assert_envelope(await client.post(CHAT, json=HELLO), 503, type_="service_unavailable")
        assert time.monotonic() - started < 1  # refused before any connection attempt
        assert error["code"] == "network_disabled" and "ORCH_LLM_NETWORK_ENABLED" in error["message"]
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["reason"] == "network_disabled"


async def test_redirects_are_never_followed(app_factory: Callable[..., FastAPI]) -> None:
    """A redirect could lead off this machine past the network gate: it is a 502, and the place it
    points at is never called (nor is any other 3xx passed on as the caller's status)."""
    async with fake_upstream() as elsewhere:
        moved = Reply(status=307, headers={"Location": elsewhere.url + "/chat/completions"}, body=b"")
        async with gateway(app_factory, moved, Reply(status=304, body=b"")) as (client, _):
            for body in ({**HELLO, "stream": True}, HELLO):
                error = assert_envelope(await client.post(CHAT, json=body), 502, type_="provider_error")
                assert error["code"] in ("upstream_redirect",) and "redirects are not followed" in error["message"]
    assert elsewhere.requests == []


async def test_answers_of_an_unexpected_shape_are_502_not_500(app_factory: Callable[..., FastAPI]) -> None:
    """Valid JSON that is not what the API promises is the upstream's fault, whole or streamed."""
    usage = completion()
    usage["usage"]["prompt_tokens"] = "many"
    bodies: list[Any] = [
        {"choices": [{"message": None}]},
        {"choices": [{"message": "a string"}]},
        completion(message={"content": 5}),
        completion(message={"tool_calls": ["x"]}),
        usage,
        [1, 2],
    ]
    async with gateway(app_factory, *(Reply(body=b) for b in bodies)) as (client, fake):
        for _ in bodies:
            error = assert_envelope(await client.post(CHAT, json=HELLO), 502, type_="provider_error")
            assert error["code"] == "provider_bad_response"
        fake.models_body = b"<html>not a model list</html>"
        assert_envelope(await client.get("/v1/models"), 502)
    first = Reply(stream=[123])
    later = Reply(stream=[chunk({"content": "one "}), [1, 2]], delay=0.05)  # the bad event after the first
    async with gateway(app_factory, first, later) as (client, _):
        error = assert_envelope(await client.post(CHAT, json={**HELLO, "stream": True}), 502)
        assert error["code"] == "provider_bad_response"
        response = await client.post(CHAT, json={**HELLO, "stream": True})
    events = sse(response.text)
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "provider_bad_response"
    assert events[-2]["error"]["message"] and "request_id" in events[0]


async def test_upstream_messages_never_carry_our_credentials(app_factory: Callable[..., FastAPI]) -> None:
    key = "k3y-for-the-upstream-only"  # no known credential shape: only knowing it finds it
    quoted = Reply(status=400, body={"error": {"message": f"invalid header: Authorization=Bearer {key}"}})
    traceback = Reply(status=500, body=b"<pre>Traceback ... OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx</pre>")
    streamed = Reply(stream=[chunk({"content": "a"}), {"error": {"message": f"bad key {key}"}}], delay=0.05)
    async with gateway(app_factory, quoted, traceback, streamed, openai_api_key=key) as (client, _):
        first = await client.post(CHAT, json=HELLO)
        second = await client.post(CHAT, json=HELLO)
        third = await client.post(CHAT, json={**HELLO, "stream": True})
    assert assert_envelope(first, 400)["message"] == "invalid header: Authorization=[REDACTED]"
    assert "[REDACTED]" in assert_envelope(second, 502)["message"]
    for response in (first, second, third):
        assert key not in response.text and "sk-abcdefghijklmnopqrstuvwx" not in response.text
    assert "[REDACTED]" in sse(third.text)[-2]["error"]["message"]


async def test_silence_after_the_headers_counts_toward_the_breaker(app_factory: Callable[..., FastAPI]) -> None:
    """An upstream that sends its headers and then nothing is failing (whole answers and streams)."""
    settings = {"llm_circuit_max_failures": 2, "llm_circuit_reset_sec": 30, "llm_timeout_sec": 0.3}
    async with gateway(app_factory, Reply(stall=True), **settings) as (client, fake):
        for _ in range(2):
            assert_envelope(await client.post(CHAT, json=HELLO), 504)
        assert assert_envelope(await client.post(CHAT, json=HELLO), 503)["code"] == "circuit_open"
    assert len(fake.requests) == 2
    silent = Reply(stream=[chunk({"content": "a"}), chunk({"content": "b"})], delay=2)
    async with gateway(app_factory, silent, **settings) as (client, fake):
        for _ in range(2):
            events = sse((await client.post(CHAT, json={**HELLO, "stream": True})).text)
            assert events[-2]["error"]["code"] == "provider_timeout"
        assert assert_envelope(await client.post(CHAT, json={**HELLO, "stream": True}), 503)["code"] == "circuit_open"
    assert len(fake.requests) == 2


async def test_a_stream_that_just_stops_is_an_error_not_an_answer(app_factory: Callable[..., FastAPI]) -> None:
    """Closed without [DONE] and without a finish_reason: cut off. With a finish_reason (some servers
    omit [DONE]): complete."""
    cut = Reply(stream=[chunk({"content": "one "}), chunk({"content": "two "})], done=False)
    finished = Reply(stream=text_chunks(["one ", "two "]), done=False)
    async with gateway(app_factory, cut, finished) as (client, _):
        broken = sse((await client.post(CHAT, json={**HELLO, "stream": True})).text)
        whole = sse((await client.post(CHAT, json={**HELLO, "stream": True})).text)
    assert broken[-1] == "[DONE]" and "without finishing" in broken[-2]["error"]["message"]
    assert whole[-1] == "[DONE]" and not any("error" in e for e in whole[:-1])
    assert [e["choices"][0]["finish_reason"] for e in whole[:-1] if e["choices"]][-1] == "stop"


async def test_a_429_retry_after_date_is_understood(app_factory: Callable[..., FastAPI]) -> None:
    """Retry-After as an HTTP date an hour away: no retry (past the 10 s cap), and the caller is told."""
    later = formatdate(time.time() + 3600, usegmt=True)
    reply = Reply(status=429, headers={"Retry-After": later}, body={"error": {"message": "slow down"}})
    async with gateway(app_factory, reply, llm_retry_count=2, llm_retry_backoff_sec=0.01) as (client, fake):
        response = await client.post(CHAT, json=HELLO)
    assert_envelope(response, 429, type_="rate_limit_error")
    assert 3500 <= int(response.headers["retry-after"]) <= 3600 and len(fake.requests) == 1


async def test_an_upstream_quoting_our_key_in_every_error_field_is_scrubbed_and_capped(
    app_factory: Callable[..., FastAPI],
) -> None:
    """message, type, param and code of a 4xx all carry the Authorization header and 200 kB each:
    the caller sees none of the key, and a few hundred characters."""
    key = "k3y-for-the-upstream-only"  # no known credential shape: only knowing it finds it
    async with gateway(app_factory, Reply(status=400, echo_auth=True), openai_api_key=key) as (client, fake):
        response = await client.post(CHAT, json=HELLO)
    assert fake.authorizations == [f"Bearer {key}"]  # it was sent, and echoed
    error = assert_envelope(response, 400)
    assert key not in response.text and "Bearer" not in response.text
    assert error["message"].startswith("Invalid header Authorization: [REDACTED]")
    assert error["param"].startswith("[REDACTED]") and error["code"].startswith("[REDACTED]")
    assert len(error["message"]) <= 500 and len(error["param"]) <= 200 and len(error["code"]) <= 64
    assert len(response.content) < 2000


async def test_a_retry_after_too_large_to_be_true_is_a_day_not_a_500(app_factory: Callable[..., FastAPI]) -> None:
    reply = Reply(status=429, headers={"Retry-After": "1e400"}, body={"error": {"message": "slow down"}})
    async with gateway(app_factory, reply) as (client, _):
        response = await client.post(CHAT, json=HELLO)
    assert_envelope(response, 429, type_="rate_limit_error")
    assert response.headers["retry-after"] == "86400"


async def test_one_requests_retries_count_as_one_failure(app_factory: Callable[..., FastAPI]) -> None:
    """Three attempts of one request against max_failures=3: its caller gets the upstream's error,
    and the next caller still reaches the upstream."""
    settings = {"llm_retry_count": 2, "llm_retry_backoff_sec": 0.01, "llm_circuit_max_failures": 3}
    async with gateway(app_factory, Reply(status=503), **settings) as (client, fake):
        for round_ in range(3):
            error = assert_envelope(await client.post(CHAT, json=HELLO), 502)
            assert error["code"] == "upstream_503", round_
            assert len(fake.requests) == 3 * (round_ + 1)
        assert assert_envelope(await client.post(CHAT, json=HELLO), 503)["code"] == "circuit_open"
    assert len(fake.requests) == 9


async def test_a_probe_that_never_answers_is_bounded_and_retry_after_is_true(
    app_factory: Callable[..., FastAPI],
) -> None:
    """Half-open, the probe gets keep-alive comments forever (streamed), then a body that drips a
    byte at a time (whole): each ends as a 504 within the request timeout, other callers are told
    how long the probe has left, and the circuit closes once a probe answers."""
    replies = (
        Reply(status=500),
        Reply(keepalive=0.1),
        Reply(drip=0.2),
        Reply(body=completion("recovered")),
    )
    settings = {"llm_circuit_max_failures": 1, "llm_circuit_reset_sec": 0.5, "llm_timeout_sec": 2.5}
    async with gateway(app_factory, *replies, **settings) as (client, fake):
        assert_envelope(await client.post(CHAT, json=HELLO), 502)
        for body in ({**HELLO, "stream": True}, HELLO):
            await asyncio.sleep(0.6)
            started = time.monotonic()
            probe = asyncio.create_task(client.post(CHAT, json=body))
            await asyncio.sleep(0.5)
            waiting = await client.post(CHAT, json=HELLO)
            assert assert_envelope(waiting, 503)["code"] == "circuit_open"
            assert waiting.headers["retry-after"] == "2"  # the probe's 2.5 s, 0.5 s in: not "1"
            error = assert_envelope(await asyncio.wait_for(probe, 10), 504)
            assert error["code"] == "provider_timeout" and "probe" in error["message"]
            assert time.monotonic() - started < 4
            # The probe failed: the next one may start a reset period later, and the caller is told.
            waiting = await client.post(CHAT, json=HELLO)
            assert assert_envelope(waiting, 503)["code"] == "circuit_open"
            assert waiting.headers["retry-after"] == "1"
        await asyncio.sleep(0.6)
        assert (await client.post(CHAT, json=HELLO)).json()["choices"][0]["message"]["content"] == "recovered"
        assert (await client.post(CHAT, json=HELLO)).status_code == 200
    assert len(fake.requests) == 5


BIG = 200 * 2**20  # far past every cap: sent piece by piece by the fake, never held whole


async def test_oversized_answers_are_502_and_the_rest_is_never_read(app_factory: Callable[..., FastAPI]) -> None:
    """A 200 MB body, a gzip bomb, a 200 MB first event: 502 provider_bad_response, at once, the
    upstream's connection closed before it finished sending."""
    replies = (Reply(big_body=BIG), Reply(gzip_bomb=BIG), Reply(huge_line=BIG))
    gzip_bomb(BIG)  # built now, not while the fake serves
    async with gateway(app_factory, *replies) as (client, fake):
        started = time.monotonic()
        for body in (HELLO, HELLO, {**HELLO, "stream": True}):
            error = assert_envelope(await client.post(CHAT, json=body), 502, type_="provider_error")
            assert error["code"] == "provider_bad_response" and "MiB" in error["message"]
        assert time.monotonic() - started < 20
        assert (await client.get("/health")).status_code == 200
        await asyncio.sleep(0.2)
    assert fake.hostile_ended == ["cut", "sent", "cut"]  # the bomb is small: it was all sent


async def test_an_oversized_event_after_the_first_byte_is_an_in_band_error(
    app_factory: Callable[..., FastAPI],
) -> None:
    reply = Reply(stream=[chunk({"role": "assistant", "content": "one "})], huge_line=BIG, delay=0.05)
    async with gateway(app_factory, reply) as (client, fake):
        response = await client.post(CHAT, json={**HELLO, "stream": True})
    assert response.status_code == 200
    events = sse(response.text)
    assert events[0]["choices"][0]["delta"]["content"] == "one "
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "provider_bad_response"
    assert fake.hostile_ended == ["cut"]


async def test_a_huge_error_body_is_read_only_as_far_as_its_message(app_factory: Callable[..., FastAPI]) -> None:
    replies = (Reply(status=400, big_body=BIG), Reply(status=500, big_body=BIG), Reply(big_body=BIG))
    async with gateway(app_factory, *replies) as (client, fake):
        started = time.monotonic()
        rejected = assert_envelope(await client.post(CHAT, json=HELLO), 400)
        failed = assert_envelope(await client.post(CHAT, json=HELLO), 502)
        # a stream request answered with a (huge) JSON body instead of an event stream
        not_a_stream = assert_envelope(await client.post(CHAT, json={**HELLO, "stream": True}), 502)
        assert time.monotonic() - started < 10
        await asyncio.sleep(0.2)
    assert len(rejected["message"]) <= 500 and rejected["message"].startswith('{"id": "chatcmpl-fake"')
    assert failed["code"] == "upstream_500" and len(failed["message"]) < 700
    assert not_a_stream["code"] == "provider_bad_response" and len(not_a_stream["message"]) < 700
    assert fake.hostile_ended == ["cut", "cut", "cut"]


async def test_an_oversized_ollama_line_is_502(app_factory: Callable[..., FastAPI]) -> None:
    first = {"model": "fake-model", "message": {"role": "assistant", "content": "one "}, "done": False}
    replies = (Reply(huge_line=BIG), Reply(stream=[first], huge_line=BIG, delay=0.05))
    async with fake_upstream(*replies) as fake:
        settings = {"llm_enabled": True, "llm_provider": "ollama", "ollama_url": fake.url.removesuffix("/v1")}
        async with running(app_factory(**settings)) as client:
            error = assert_envelope(await client.post(CHAT, json={**HELLO, "stream": True}), 502)
            later = sse((await client.post(CHAT, json={**HELLO, "stream": True})).text)
        await asyncio.sleep(0.2)
    assert error["code"] == "provider_bad_response"
    assert later[-1] == "[DONE]" and later[-2]["error"]["code"] == "provider_bad_response"
    assert fake.hostile_ended == ["cut", "cut"]


async def test_a_probe_whose_caller_leaves_lets_the_next_caller_probe(app_factory: Callable[..., FastAPI]) -> None:
    """The probe's caller gives up while the upstream has not even sent its headers: the next
    request is the probe at once, instead of a 503 until the probe's time runs out."""
    replies = (Reply(status=500), Reply(hang=True), Reply(body=completion("recovered")))
    settings = {"llm_circuit_max_failures": 1, "llm_circuit_reset_sec": 0.3, "llm_timeout_sec": 30}
    async with gateway(app_factory, *replies, **settings) as (client, fake):
        assert_envelope(await client.post(CHAT, json=HELLO), 502)
        await asyncio.sleep(0.4)
        probe = asyncio.create_task(client.post(CHAT, json=HELLO))
        while len(fake.requests) < 2:
            await asyncio.sleep(0.01)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        response = await client.post(CHAT, json=HELLO)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "recovered"
