"""Demo-mode chat: the chat.completion shape, SSE streaming exactly per the contract."""

from __future__ import annotations

import json
from typing import Any

import httpx

from app.providers.demo import DEMO_HEADER, DEMO_MODEL

CHAT = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "hello there"}]}
ORCH_FIELDS = ("request_id", "memory_decision", "route_decision", "model_decision", "tool_result")


def sse_events(text: str) -> list[str]:
    """The data payloads of an SSE body; asserts the framing (one `data:` line per event)."""
    assert text.endswith("\n\n")
    events = []
    for block in text.strip("\n").split("\n\n"):
        assert block.startswith("data: "), block
        assert "\n" not in block
        events.append(block[len("data: ") :])
    return events


async def test_demo_completion_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=HELLO)
    assert response.status_code == 200
    assert response.headers["x-ai-generated"] == "true"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int) and body["created"] > 1_700_000_000
    assert body["model"] == DEMO_MODEL
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith(DEMO_HEADER)
    assert "hello there" in choice["message"]["content"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    for field in ORCH_FIELDS:
        assert field in body
    assert body["request_id"] == response.headers["x-request-id"]


async def test_demo_is_deterministic_and_ids_are_unique(client: httpx.AsyncClient) -> None:
    first, second = (await client.post(CHAT, json=HELLO)).json(), (await client.post(CHAT, json=HELLO)).json()
    assert first["choices"] == second["choices"]
    assert first["id"] != second["id"]


async def test_content_parts_and_extra_fields_are_accepted(client: httpx.AsyncClient) -> None:
    body = {
        "model": "any-model",
        "temperature": 0.2,
        "some_vendor_extension": {"x": 1},
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "part one"}], "metadata": {"pinned": True}},
        ],
    }
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200
    assert "part one" in response.json()["choices"][0]["message"]["content"]


async def stream(client: httpx.AsyncClient, extra: dict[str, Any]) -> tuple[httpx.Response, list[str]]:
    async with client.stream("POST", CHAT, json={**HELLO, "stream": True, **extra}) as response:
        text = (await response.aread()).decode()
    return response, sse_events(text)


async def test_stream_follows_the_sse_contract(client: httpx.AsyncClient) -> None:
    response, events = await stream(client, {})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-ai-generated"] == "true"
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) > 5  # word by word
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == DEMO_MODEL for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert chunks[0]["request_id"] == response.headers["x-request-id"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert all("usage" not in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    whole = (await client.post(CHAT, json=HELLO)).json()["choices"][0]["message"]["content"]
    assert text == whole


async def test_stream_usage_chunk_when_asked(client: httpx.AsyncClient) -> None:
    _, events = await stream(client, {"stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["total_tokens"] > 0
    assert json.loads(events[-3])["choices"][0]["finish_reason"] == "stop"
