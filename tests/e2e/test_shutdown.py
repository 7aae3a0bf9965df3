"""SIGTERM: running requests get ORCH_SHUTDOWN_GRACE_SEC, the receipts are drained, and an OTLP
collector that never answers does not hold the exit (or the drain) up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import E2E_TOKEN, LiveServer
from tests.fakes.upstream import Reply, fake_upstream

pytestmark = pytest.mark.e2e
HEADERS = {"Authorization": f"Bearer {E2E_TOKEN}"}


def exit_after_sigterm(server: LiveServer, within: float) -> float:
    """SIGTERM the service; how long it took to exit (it is killed, and the test fails, past ``within``)."""
    assert server.process is not None
    sent = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=within)
    except Exception:
        server.process.kill()
        raise AssertionError(f"still running {within} s after SIGTERM:\n{server.logs()[-3000:]}") from None
    return time.monotonic() - sent


def receipts(db: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id, finished_at FROM traces").fetchall()


async def test_a_stream_that_never_ends_is_cut_after_the_grace_and_its_receipt_is_written(tmp_path: Path) -> None:
    async with fake_upstream(Reply(endless=True, delay=0.05)) as fake:
        env = {
            "ORCH_LLM_ENABLED": "1",
            "ORCH_LLM_PROVIDER": "openai",
            "ORCH_OPENAI_BASE_URL": fake.url,
            "ORCH_LLM_MAX_OUTPUT_CHARS": "0",
            "ORCH_SHUTDOWN_GRACE_SEC": "1",
            "ORCH_TRACE_DB_PATH": str(tmp_path / "trace.db"),
        }
        server = LiveServer(tmp_path, env)
        await asyncio.to_thread(server.start)
        try:
            async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=30) as client:
                body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "go on"}]}
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    assert response.status_code == 200
                    stream = response.aiter_lines()
                    first = await anext(stream)  # the orchestrator fields ride on the first chunk
                    trace_id = json.loads(first.removeprefix("data: "))["request_id"]
                    # Without a grace the service waits for this stream for ever (it was 60 s and more).
                    took = await asyncio.to_thread(exit_after_sigterm, server, 20)
                    # Cut: the connection is dropped (or closed) mid-stream; either way it ends.
                    with contextlib.suppress(httpx.HTTPError):
                        async for _ in stream:
                            pass
        finally:
            await asyncio.to_thread(server.stop)
    assert took >= 1.0
    assert "timeout graceful shutdown exceeded" in server.logs()
    rows = dict(receipts(tmp_path / "trace.db"))
    assert rows[trace_id] is not None, "the cut stream's receipt was not finished"


@pytest.fixture
def silent_collector() -> Iterator[str]:
    """An OTLP endpoint that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1/traces"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_silent_otlp_collector_does_not_hold_up_the_exit_or_the_receipts(
    tmp_path: Path, silent_collector: str
) -> None:
    env = {
        "ORCH_OTEL_ENABLED": "1",
        "ORCH_OTEL_EXPORTER_OTLP_ENDPOINT": silent_collector,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # nothing exported before the shutdown
        "ORCH_TRACE_DB_PATH": str(tmp_path / "trace.db"),
    }
    with LiveServer(tmp_path, env) as server:
        ids = []
        for n in range(20):
            reply = httpx.post(
                server.url + "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": f"hello {n}"}]},
                headers=HEADERS,
            )
            ids.append(reply.json()["request_id"])
        # The SDK's own shutdown waits out four 5 s export timeouts (it took 17 s), on the loop.
        exit_after_sigterm(server, 10)
    logs = server.logs()
    assert "spans not exported at shutdown" in logs
    rows = dict(receipts(tmp_path / "trace.db"))
    assert all(rows.get(trace_id) for trace_id in ids)
