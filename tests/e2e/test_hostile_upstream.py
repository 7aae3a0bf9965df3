"""The service under uvicorn against a real upstream that misbehaves on purpose (a local HTTP
server, tests/fakes/upstream.py): it quotes our key back, never answers a probe, sends hundreds of
megabytes. Each case answers with the right status and envelope within a bounded time, the
process's memory stays bounded, /health keeps answering, and the key is nowhere."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import assert_envelope
from tests.e2e.server import E2E_TOKEN, LiveServer
from tests.fakes.upstream import FakeUpstream, Reply, chunk, fake_upstream, gzip_bomb, text_chunks

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
HELLO = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**HELLO, "stream": True}
KEY = "k3y-for-the-upstream-only-7f2a"  # no known credential shape: only knowing it finds it
BIG = 200 * 2**20  # generated piece by piece by the fake, never held whole
RSS_GROWTH_BOUND_KB = 150 * 1024  # generous: before the caps one 200 MB body cost ~470 MB


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@asynccontextmanager
async def service(
    tmp_path: Path, *replies: Reply, **env: str
) -> AsyncIterator[tuple[httpx.AsyncClient, LiveServer, FakeUpstream]]:
    async with fake_upstream(*replies) as fake:
        settings = {
            "ORCH_LLM_ENABLED": "1",
            "ORCH_LLM_PROVIDER": "openai",
            "ORCH_OPENAI_BASE_URL": fake.url,
            "ORCH_OPENAI_API_KEY": KEY,
            **env,
        }
        server = LiveServer(tmp_path, settings)
        await asyncio.to_thread(server.start)
        try:
            headers = {"Authorization": f"Bearer {E2E_TOKEN}"}
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
                yield client, server, fake
        finally:
            await asyncio.to_thread(server.stop)


async def while_health_answers(client: httpx.AsyncClient, call: Awaitable[httpx.Response]) -> httpx.Response:
    """Run ``call`` while /health is asked every 100 ms; each answer must be a 200 within 2 s."""
    task = asyncio.ensure_future(call)
    answered = 0
    while not task.done():
        started = time.monotonic()
        assert (await client.get("/health", timeout=2)).status_code == 200
        assert time.monotonic() - started < 2
        answered += 1
        await asyncio.wait({task}, timeout=0.1)
    assert answered >= 1
    return await task


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


async def test_the_upstream_key_quoted_back_reaches_no_caller_log_or_receipt(tmp_path: Path) -> None:
    replies = (
        Reply(status=400, echo_auth=True),
        Reply(status=422, echo_auth=True),
        Reply(status=500, echo_auth=True),
        Reply(
            stream=[chunk({"content": "a"}), {"error": {"message": f"bad key Bearer {KEY}", "code": KEY}}], delay=0.05
        ),
    )
    async with service(tmp_path, *replies) as (client, server, fake):
        rejected = await client.post(CHAT, json=HELLO)
        streamed_rejected = await client.post(CHAT, json=STREAM)
        failed = await client.post(CHAT, json=HELLO)
        mid_stream = await client.post(CHAT, json=STREAM)
    assert fake.authorizations[0] == f"Bearer {KEY}"  # the key was sent, and quoted back
    for response, status in ((rejected, 400), (streamed_rejected, 422), (failed, 502)):
        error = assert_envelope(response, status)
        assert len(response.content) < 2000
        assert "[REDACTED]" in error["message"]
    assert assert_envelope(rejected, 400)["param"].startswith("[REDACTED]")
    assert mid_stream.status_code == 200 and "[REDACTED]" in mid_stream.text
    for response in (rejected, streamed_rejected, failed, mid_stream):
        assert KEY not in response.text
    # The server has stopped: its log is complete and its receipts are on disk (WAL included).
    assert (tmp_path / "instance" / "trace.db").exists()
    assert files_containing(tmp_path, b"upstream_500"), "the receipts were not where this test looks"
    assert files_containing(tmp_path, KEY.encode()) == []
    assert KEY not in server.logs()


async def test_the_breaker_counts_requests_and_its_probe_cannot_hold_it_open(tmp_path: Path) -> None:
    replies = (
        *(Reply(status=503) for _ in range(9)),
        Reply(keepalive=0.2),
        Reply(drip=0.5),
        Reply(),
        Reply(stream=text_chunks(["back"])),
    )
    env = {
        "ORCH_LLM_RETRY_COUNT": "2",
        "ORCH_LLM_RETRY_BACKOFF_SEC": "0.01",
        "ORCH_LLM_CIRCUIT_MAX_FAILURES": "3",
        "ORCH_LLM_CIRCUIT_RESET_SEC": "1",
        "ORCH_LLM_TIMEOUT_SEC": "3",
    }
    async with service(tmp_path, *replies, **env) as (client, _, fake):
        # Three attempts each: every caller gets the upstream's error, until three requests failed.
        for _ in range(3):
            assert assert_envelope(await client.post(CHAT, json=HELLO), 502)["code"] == "upstream_503"
        assert assert_envelope(await client.post(CHAT, json=HELLO), 503)["code"] == "circuit_open"
        assert len(fake.requests) == 9
        for body in (STREAM, HELLO):  # keep-alive comments forever, then a body a byte at a time
            await asyncio.sleep(1.1)
            started = time.monotonic()
            probe = asyncio.ensure_future(client.post(CHAT, json=body))
            await asyncio.sleep(0.5)
            waiting = await client.post(CHAT, json=HELLO)
            assert assert_envelope(waiting, 503)["code"] == "circuit_open"
            assert waiting.headers["retry-after"] in ("2", "3")  # the probe's time left, not "1"
            error = assert_envelope(await while_health_answers(client, probe), 504)
            assert error["code"] == "provider_timeout"
            assert time.monotonic() - started < 8
            waiting = await client.post(CHAT, json=HELLO)
            assert waiting.status_code == 503 and waiting.headers["retry-after"] == "1"
        await asyncio.sleep(1.1)
        assert (await client.post(CHAT, json=HELLO)).status_code == 200
        assert (await client.post(CHAT, json=STREAM)).status_code == 200
    assert len(fake.requests) == 13


async def test_oversized_upstream_answers_are_refused_with_bounded_memory(tmp_path: Path) -> None:
    cases: list[tuple[str, Reply, dict[str, Any], int, str]] = [
        ("200 MB body", Reply(big_body=BIG), HELLO, 502, "provider_bad_response"),
        ("gzip bomb", Reply(gzip_bomb=BIG), HELLO, 502, "provider_bad_response"),
        ("200 MB first event", Reply(huge_line=BIG), STREAM, 502, "provider_bad_response"),
        ("200 MB error body", Reply(status=400, big_body=BIG), HELLO, 400, "upstream_error"),
        ("200 MB 500 body", Reply(status=500, big_body=BIG), HELLO, 502, "upstream_500"),
    ]
    later = Reply(stream=[chunk({"role": "assistant", "content": "one "})], huge_line=BIG, delay=0.05)
    replies = (Reply(), *(case[1] for case in cases), later, Reply())
    gzip_bomb(BIG)  # built now, not while the fake serves (it runs on this test's event loop)
    async with service(tmp_path, *replies) as (client, server, fake):
        assert server.process is not None
        pid = server.process.pid
        assert (await client.post(CHAT, json=HELLO)).status_code == 200  # warm: pools and imports loaded
        baseline = status_kb(pid, "VmRSS")
        for name, _, body, status, code in cases:
            started = time.monotonic()
            response = await while_health_answers(client, client.post(CHAT, json=body))
            error = assert_envelope(response, status)
            assert error["code"] == code, name
            assert len(error["message"]) < 700 and len(response.content) < 2000, name
            assert time.monotonic() - started < 20, name
        started = time.monotonic()
        response = await while_health_answers(client, client.post(CHAT, json=STREAM))
        assert response.status_code == 200 and time.monotonic() - started < 20
        assert '"content":"one "' in response.text and "provider_bad_response" in response.text
        assert response.text.endswith("data: [DONE]\n\n")
        growth = status_kb(pid, "VmHWM") - baseline
        assert growth < RSS_GROWTH_BOUND_KB, f"peak RSS grew by {growth // 1024} MB"
        assert (await client.post(CHAT, json=HELLO)).status_code == 200
    assert fake.hostile_ended.count("cut") == 5  # the bomb is small: it went out whole
