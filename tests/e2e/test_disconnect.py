"""A client that goes away stops the upstream call promptly, whether or not anything was written.

The real service under uvicorn, a real slow upstream on loopback (``tests/fakes/upstream.py``
records when its client went away), and a client that gives up after 1.5 s: the upstream sees
its connection closed within a few seconds (in practice within a fraction of one), and the
receipt records ``outcome: client_disconnected``. For plain chat, agent chat and the tool loop,
whole and streamed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import E2E_TOKEN, LiveServer
from tests.fakes.upstream import FakeUpstream, Reply, chunk, completion, fake_upstream

pytestmark = pytest.mark.e2e

HEADERS = {"Authorization": f"Bearer {E2E_TOKEN}"}
ASK = [{"role": "user", "content": "What is 6*7?"}]
GIVE_UP_AFTER = 1.5  # the client's patience, in seconds
NOTICED_WITHIN = 3.0  # the bound asserted (generous: measured well under a second)

SLOW_ANSWER = Reply(delay=60)  # a whole answer that takes a minute
ONLY_KEEPALIVES = Reply(stream=[chunk({"role": "assistant", "content": "Hi"}), chunk({}, "stop")], comments_for=60)


def calc_call() -> Reply:
    call = {"id": "call_1", "type": "function", "function": {"name": "safe_calc", "arguments": '{"expression": "6*7"}'}}
    return Reply(body=completion("", message={"content": None, "tool_calls": [call]}, finish_reason="tool_calls"))


def streamed_calc_call() -> Reply:
    return Reply(
        stream=[
            chunk({"role": "assistant", "content": None}),
            chunk(
                {"tool_calls": [{"index": 0, "id": "call_s1", "type": "function", "function": {"name": "safe_calc"}}]}
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"expression": "6*7"}'}}]}),
            chunk({}, "tool_calls"),
        ]
    )


@asynccontextmanager
async def serving(tmp_path: Path, *replies: Reply) -> AsyncIterator[tuple[LiveServer, FakeUpstream]]:
    async with fake_upstream(*replies) as fake:
        env = {
            "ORCH_LLM_ENABLED": "1",
            "ORCH_LLM_PROVIDER": "openai",
            "ORCH_OPENAI_BASE_URL": fake.url,
            "ORCH_LLM_MAX_OUTPUT_CHARS": "0",
            "ORCH_TRUST_PANEL_ENABLED": "1",
            "ORCH_TRACE_DB_PATH": str(tmp_path / "trace.db"),
        }
        server = LiveServer(tmp_path, env)
        await asyncio.to_thread(server.start)
        try:
            yield server, fake
        finally:
            await asyncio.to_thread(server.stop)


async def give_up(server: LiveServer, path: str, body: dict[str, Any]) -> float:
    """Send the request, wait for the answer GIVE_UP_AFTER seconds, close the connection; when."""
    timeout = httpx.Timeout(10.0, read=GIVE_UP_AFTER)
    async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=timeout) as client:
        with pytest.raises(httpx.ReadTimeout):
            async with client.stream("POST", path, json=body) as response:
                assert response.status_code == 200, await response.aread()
                async for data in response.aiter_bytes():
                    raise AssertionError(f"the slow upstream sent something to relay: {data[:200]!r}")
    return time.monotonic()


async def upstream_left(fake: FakeUpstream, after: float) -> float:
    """Seconds from ``after`` until the upstream saw its connection closed (fails past 5 s)."""
    deadline = time.monotonic() + 5.0
    while fake.disconnected_at is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert fake.disconnected_at is not None, "the upstream never saw its connection closed"
    return fake.disconnected_at - after


async def disconnected_receipt(server: LiveServer) -> list[dict[str, Any]]:
    """The steps of the receipt whose provider step says client_disconnected."""
    async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=10) as client:
        deadline = time.monotonic() + 5.0
        while True:
            events = (await client.get("/v1/trust/events", params={"step_type": "llm_provider"})).json()["events"]
            left = [e for e in events if e["payload"].get("outcome") == "client_disconnected"]
            if left or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert left, f"no receipt says client_disconnected: {json.dumps(events)[:2000]}"
        trace = (await client.get(f"/v1/trust/trace/{left[0]['trace_id']}")).json()
        assert (await client.get("/health")).status_code == 200
    steps: list[dict[str, Any]] = trace["steps"]
    return steps


CASES = {
    "chat, whole": ("/v1/chat/completions", False, [SLOW_ANSWER], 1),
    "chat, streamed (keep-alives only)": ("/v1/chat/completions", True, [ONLY_KEEPALIVES], 1),
    "agent chat, whole": ("/v1/agents/holly/chat", False, [SLOW_ANSWER], 1),
    "agent chat, streamed": ("/v1/agents/holly/chat", True, [ONLY_KEEPALIVES], 1),
    # Holly's first round calls safe_calc, the gateway runs it, the second round is the slow one.
    "tool loop, whole": ("/v1/agents/holly/chat", False, [calc_call(), SLOW_ANSWER], 2),
    "tool loop, streamed": ("/v1/agents/holly/chat", True, [streamed_calc_call(), ONLY_KEEPALIVES], 2),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_client_that_leaves_before_anything_is_written_stops_the_upstream(tmp_path: Path, case: str) -> None:
    path, stream, script, upstream_calls = CASES[case]
    async with serving(tmp_path, *script) as (server, fake):
        left_at = await give_up(server, path, {"model": "fake-model", "stream": stream, "messages": ASK})
        assert len(fake.requests) == upstream_calls  # the slow call was in flight when the client left
        assert await upstream_left(fake, left_at) < NOTICED_WITHIN
        steps = await disconnected_receipt(server)
    access = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    assert any(line.get("route") == path.replace("holly", "{name}") and line.get("status") == 499 for line in access)
    kinds = [step["step_type"] for step in steps]
    assert kinds[0] == "request" and kinds[-1] == "llm_provider" and "error" not in kinds, kinds
    if upstream_calls == 2:
        assert "tool_result" in kinds
    provider = steps[-1]["payload"]
    assert provider["outcome"] == "client_disconnected" and provider["stream"] is stream
    assert provider["finish_reason"] is None and provider["usage"] is None


async def test_a_client_that_leaves_a_started_stream_that_writes_nothing_stops_the_upstream(tmp_path: Path) -> None:
    # The upstream's first event (the role) starts the stream, so the 200 goes out; then it sends
    # only keep-alives, so nothing more is written to the client.
    quiet = Reply(
        stream=[chunk({"role": "assistant", "content": ""}), chunk({}, "stop")], comments_for=60, comments_after=1
    )
    async with serving(tmp_path, quiet) as (server, fake):
        body = {"model": "fake-model", "stream": True, "messages": ASK}
        left_at = await give_up(server, "/v1/chat/completions", body)
        assert await upstream_left(fake, left_at) < NOTICED_WITHIN
        steps = await disconnected_receipt(server)
    assert steps[-1]["payload"]["outcome"] == "client_disconnected"


async def test_client_disconnect_mid_stream_closes_the_upstream_connection_within_a_second(tmp_path: Path) -> None:
    async with serving(tmp_path, Reply(endless=True, delay=0.05)) as (server, fake):
        async with httpx.AsyncClient(base_url=server.url, headers=HEADERS) as client:
            body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "go on"}]}
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                received = 0
                async for _ in response.aiter_bytes():
                    received += 1
                    if received >= 3:
                        break
            closed_at = time.monotonic()
        assert await upstream_left(fake, closed_at) < 1.0
        steps = await disconnected_receipt(server)
    assert steps[-1]["payload"]["first_piece_ms"] is not None
