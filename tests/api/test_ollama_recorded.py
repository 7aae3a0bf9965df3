"""The ``ollama`` provider against recorded Ollama answers (tests/fixtures/ollama, see its README).

A tiny aiohttp server on a free local port replays the recordings over real HTTP and records what
the gateway sent it; the gateway runs in-process with ``ORCH_LLM_PROVIDER=ollama`` pointed at it.
The tests check the OpenAI shapes a client gets back and the Ollama request the gateway made.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from fastapi import FastAPI

from tests.conftest import assert_envelope, running

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ollama"
CHAT = "/v1/chat/completions"
WEATHER_TOOL = json.loads((FIXTURES / "chat_tools.json").read_text())["request"]["tools"]


@dataclass(frozen=True)
class Recording:
    status: int
    content_type: str
    lines: list[bytes]  # the body, line by line (one line for a whole JSON answer)

    @classmethod
    def load(cls, name: str) -> Recording:
        path = FIXTURES / name
        if path.suffix == ".ndjson":
            return cls(200, "application/x-ndjson", path.read_bytes().splitlines(keepends=True))
        exchange = json.loads(path.read_text())
        return cls(exchange["status"], "application/json; charset=utf-8", [json.dumps(exchange["body"]).encode()])

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@dataclass
class RecordedOllama:
    """Serves ``chat`` on ``POST /api/chat`` and ``tags.json`` on ``GET /api/tags``; records chat bodies."""

    chat: Recording | None = None
    tags: Recording = field(default_factory=lambda: Recording.load("tags.json"))
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def replay(self, request: web.Request, recording: Recording) -> web.StreamResponse:
        response = web.StreamResponse(status=recording.status, headers={"Content-Type": recording.content_type})
        await response.prepare(request)
        for line in recording.lines:  # line by line, as Ollama flushes each streamed object
            await response.write(line)
        await response.write_eof()
        return response

    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        assert self.chat is not None, "the test did not say what /api/chat answers"
        return await self.replay(request, self.chat)

    async def handle_tags(self, request: web.Request) -> web.StreamResponse:
        return await self.replay(request, self.tags)


@asynccontextmanager
async def recorded_ollama() -> AsyncIterator[RecordedOllama]:
    fake = RecordedOllama()
    app = web.Application()
    app.router.add_post("/api/chat", fake.handle_chat)
    app.router.add_get("/api/tags", fake.handle_tags)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@asynccontextmanager
async def gateway(
    app_factory: Callable[..., FastAPI], chat: str | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, RecordedOllama]]:
    async with recorded_ollama() as fake:
        fake.chat = Recording.load(chat) if chat else None
        app = app_factory(llm_enabled=True, llm_provider="ollama", ollama_url=fake.url, model_chat="llama3.2")
        async with running(app) as client:
            yield client, fake


def sse(response: httpx.Response) -> list[Any]:
    """The SSE events of a streamed answer (parsed JSON, and the final ``"[DONE]"``)."""
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block.removeprefix("data: ") for block in response.text.strip().split("\n\n")]
    return [event if event == "[DONE]" else json.loads(event) for event in events]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_whole_answer_and_the_ollama_request_behind_it(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(app_factory, "chat.json") as (client, fake):
        response = await client.post(
            CHAT,
            json={
                "model": "llama3.2",
                "messages": user("why is the sky blue?"),
                "max_tokens": 50,
                "temperature": 0.2,
                "top_p": 0.9,
                "seed": 101,
                "stop": "\n\n",
            },
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "llama3.2"
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Hello! How are you today?"}
    assert choice["finish_reason"] == "stop"  # the recording has no done_reason: a finished answer
    assert body["usage"] == {"prompt_tokens": 26, "completion_tokens": 298, "total_tokens": 324}
    assert isinstance(body["request_id"], str) and body["request_id"]  # the orchestrator's receipt id
    [sent] = fake.requests
    assert sent["model"] == "llama3.2"
    assert sent["stream"] is False
    assert sent["messages"] == [{"role": "user", "content": "why is the sky blue?"}]
    assert sent["options"] == {"num_predict": 50, "temperature": 0.2, "top_p": 0.9, "seed": 101, "stop": ["\n\n"]}
    assert "format" not in sent and "tools" not in sent


async def test_length_and_max_completion_tokens(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(app_factory, "chat_length.json") as (client, fake):
        response = await client.post(
            CHAT, json={"messages": user("why is the sky blue?"), "max_completion_tokens": 5, "stop": ["\n", "user:"]}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    [sent] = fake.requests
    assert sent["model"] == "llama3.2"  # ORCH_MODEL_CHAT when the request names none
    assert sent["options"] == {"num_predict": 5, "stop": ["\n", "user:"]}


@pytest.mark.parametrize(
    ("response_format", "expected_format"),
    [
        ({"type": "json_object"}, "json"),
        (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "person",
                    "schema": json.loads((FIXTURES / "chat_structured.json").read_text())["request"]["format"],
                },
            },
            json.loads((FIXTURES / "chat_structured.json").read_text())["request"]["format"],
        ),
    ],
    ids=["json_object", "json_schema"],
)
async def test_response_format_becomes_ollama_format(
    app_factory: Callable[..., FastAPI], response_format: dict[str, Any], expected_format: Any
) -> None:
    async with gateway(app_factory, "chat_structured.json") as (client, fake):
        response = await client.post(
            CHAT,
            json={
                "model": "llama3.1",
                "messages": user("Ollama is 22 years old and busy saving the world. Return a JSON object."),
                "temperature": 0,
                "response_format": response_format,
            },
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {"age": 22, "available": False}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 34, "completion_tokens": 12, "total_tokens": 46}
    [sent] = fake.requests
    assert sent["format"] == expected_format
    assert sent["options"] == {"temperature": 0}
    assert "response_format" not in sent


async def test_tool_calls_get_ids_and_json_string_arguments(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(app_factory, "chat_tools.json") as (client, fake):
        response = await client.post(
            CHAT, json={"messages": user("What is the weather today in Paris?"), "tools": WEATHER_TOOL}
        )
    assert response.status_code == 200, response.text
    [choice] = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None  # OpenAI's shape for a pure tool call (Ollama sends "")
    [call] = message["tool_calls"]
    assert set(call) == {"id", "type", "function"}  # whole messages carry no stream `index`
    assert isinstance(call["id"], str) and call["id"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_current_weather"
    assert isinstance(call["function"]["arguments"], str)
    assert json.loads(call["function"]["arguments"]) == {"format": "celsius", "location": "Paris, FR"}
    [sent] = fake.requests
    assert sent["tools"] == WEATHER_TOOL


async def test_assistant_tool_calls_in_the_history_go_upstream_as_objects(app_factory: Callable[..., FastAPI]) -> None:
    history = [
        *user("What is the weather today in Paris?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": '{"location": "Paris, FR"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "name": "get_current_weather", "content": "22 C"},
    ]
    async with gateway(app_factory, "chat.json") as (client, fake):
        response = await client.post(CHAT, json={"messages": history, "tools": WEATHER_TOOL})
    assert response.status_code == 200, response.text
    [sent] = fake.requests
    assistant, tool = sent["messages"][1], sent["messages"][2]
    assert assistant["tool_calls"] == [
        {"function": {"name": "get_current_weather", "arguments": {"location": "Paris, FR"}}}
    ]
    assert tool == {"role": "tool", "content": "22 C", "tool_name": "get_current_weather"}


async def test_streamed_answer(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(app_factory, "chat_stream.ndjson") as (client, fake):
        response = await client.post(
            CHAT,
            json={
                "model": "gemma2:2b",
                "messages": user("hi"),
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_tokens": 64,
            },
        )
    assert response.status_code == 200, response.text
    events = sse(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {chunk["id"] for chunk in chunks} == {chunks[0]["id"]}
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    first = chunks[0]
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert isinstance(first["request_id"], str) and first["request_id"]
    *choice_chunks, usage_chunk = chunks
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in choice_chunks)
    assert text == "Hello!"
    finishes = [chunk["choices"][0]["finish_reason"] for chunk in choice_chunks]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 10, "completion_tokens": 17, "total_tokens": 27}
    [sent] = fake.requests
    assert sent["stream"] is True
    assert sent["model"] == "gemma2:2b"
    assert sent["options"] == {"num_predict": 64}


async def test_streamed_answer_without_usage_asked_has_no_usage_chunk(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(app_factory, "chat_stream.ndjson") as (client, _):
        response = await client.post(CHAT, json={"messages": user("hi"), "stream": True})
    chunks = sse(response)[:-1]
    assert all(chunk["choices"] for chunk in chunks)
    assert all("usage" not in chunk or chunk["usage"] is None for chunk in chunks)


async def test_streamed_tool_call_deltas_carry_an_index(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(app_factory, "chat_tools_stream.ndjson") as (client, fake):
        response = await client.post(
            CHAT,
            json={
                "model": "qwen3",
                "messages": user("What is the weather today in Toronto?"),
                "stream": True,
                "tools": WEATHER_TOOL,
            },
        )
    assert response.status_code == 200, response.text
    chunks = sse(response)[:-1]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert "".join(d.get("content") or "" for d in deltas) == "celsius</think>"
    calls = [call for d in deltas for call in d.get("tool_calls") or []]
    assert len(calls) == 1
    [call] = calls
    assert call["index"] == 0
    assert isinstance(call["id"], str) and call["id"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_current_weather"
    assert json.loads(call["function"]["arguments"]) == {"format": "celsius", "location": "Toronto"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    [sent] = fake.requests
    assert sent["tools"] == WEATHER_TOOL and sent["stream"] is True


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_model_not_found_passes_through_as_404(app_factory: Callable[..., FastAPI], stream: bool) -> None:
    async with gateway(app_factory, "error_model_not_found.json") as (client, _):
        response = await client.post(CHAT, json={"model": "x", "messages": user("hello"), "stream": stream})
    error = assert_envelope(response, 404, type_="invalid_request_error")
    assert error["message"] == 'model "x" not found, try pulling it first'


async def test_models_come_from_api_tags(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(app_factory) as (client, _):
        listed = await client.get("/v1/models")
        one = await client.get("/v1/models/llama3:latest")
        missing = await client.get("/v1/models/mistral:latest")
        ready = await client.get("/ready")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["object"] == "list"
    tags = Recording.load("tags.json").json_lines()[0]["models"]
    assert [model["id"] for model in body["data"]] == [tag["name"] for tag in tags]
    for model, tag in zip(body["data"], tags, strict=True):
        assert model["object"] == "model"
        assert model["owned_by"] == "ollama"
        assert model["created"] == int(datetime.fromisoformat(tag["modified_at"]).timestamp())
    assert one.status_code == 200 and one.json()["id"] == "llama3:latest"
    assert_envelope(missing, 404)
    assert ready.status_code == 200
    assert ready.json()["checks"]["provider"] == "ok"
