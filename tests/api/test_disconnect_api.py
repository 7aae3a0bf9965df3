"""The app driven as an ASGI server drives it, with a client that leaves (``http.disconnect`` on
the receive channel after the body) or a request cut by cancellation (the server's shutdown),
against a real slow upstream on loopback: the upstream call stops and the receipt says so."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from app.lifespan import AppState
from tests.conftest import TOKEN, running
from tests.fakes.upstream import FakeUpstream, Reply, chunk, fake_upstream

ASK = [{"role": "user", "content": "What is 6*7?"}]
SLOW = {False: Reply(delay=60), True: Reply(stream=[chunk({"content": "late"}), chunk({}, "stop")], comments_for=60)}


def settings(fake: FakeUpstream) -> dict[str, Any]:
    return {
        "llm_enabled": True,
        "llm_provider": "openai",
        "openai_base_url": fake.url,
        "model_chat": "fake-model",
        "trust_panel_enabled": True,
    }


async def serve_once(app: FastAPI, path: str, body: dict[str, Any], leave: asyncio.Event) -> list[dict[str, Any]]:
    """One request through the app as uvicorn would call it; the client leaves when ``leave`` is set.
    Returns what the app sent."""
    data = orjson.dumps(body)
    pending = [{"type": "http.request", "body": data, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return sent


async def until(condition: Callable[[], object], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def provider_steps(client: httpx.AsyncClient, state: AppState) -> list[dict[str, Any]]:
    await state.tracer.flush()
    events = (await client.get("/v1/trust/events", params={"step_type": "llm_provider,error"})).json()["events"]
    return list(events)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/agents/holly/chat"])
async def test_a_caller_who_leaves_stops_the_upstream_call(
    app_factory: Callable[..., FastAPI], path: str, stream: bool
) -> None:
    async with fake_upstream(SLOW[stream]) as fake:
        app = app_factory(**settings(fake))
        async with running(app) as client:
            leave = asyncio.Event()
            served = asyncio.create_task(serve_once(app, path, {"stream": stream, "messages": ASK}, leave))
            await until(lambda: fake.requests)
            await asyncio.sleep(0.3)  # past the watch's start
            leave.set()
            left_at = time.monotonic()
            sent = await asyncio.wait_for(served, 5)
            assert sent == []  # nobody to answer
            await until(lambda: fake.disconnected_at is not None)
            assert fake.disconnected_at is not None and fake.disconnected_at - left_at < 3.0
            events = await provider_steps(client, app.state.orch)
    assert [e["step_type"] for e in events] == ["llm_provider"]
    payload = events[0]["payload"]
    assert payload["outcome"] == "client_disconnected" and payload["stream"] is stream
    assert payload["usage"] is None and payload["finish_reason"] is None


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_request_cut_by_cancellation_is_recorded_too(app_factory: Callable[..., FastAPI], stream: bool) -> None:
    async with fake_upstream(SLOW[stream]) as fake:
        app = app_factory(**settings(fake))
        async with running(app) as client:
            served = asyncio.create_task(
                serve_once(app, "/v1/chat/completions", {"stream": stream, "messages": ASK}, asyncio.Event())
            )
            await until(lambda: fake.requests)
            served.cancel()  # what the server does to requests still running when its grace is over
            with pytest.raises(asyncio.CancelledError):
                await served
            await until(lambda: fake.disconnected_at is not None)
            events = await provider_steps(client, app.state.orch)
    assert [e["step_type"] for e in events] == ["llm_provider"]
    assert events[0]["payload"]["outcome"] == "client_disconnected"
