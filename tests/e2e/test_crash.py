"""kill -9 under load: after a restart the database opens and every committed trace verifies."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from app.receipts.chain import verify_steps, verify_trace
from tests.e2e.server import E2E_TOKEN, LiveServer

pytestmark = pytest.mark.e2e

ENV = {"ORCH_TRUST_PANEL_ENABLED": "1", "ORCH_RATE_LIMIT_ENABLED": "0", "ORCH_LOG_LEVEL": "WARNING"}


async def hammer(url: str, seconds: float) -> int:
    """Chat requests from 16 concurrent clients until the deadline (or until the server dies)."""
    done = 0
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {E2E_TOKEN}"}
    body = {"messages": [{"role": "user", "content": "crash test"}]}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            try:
                response = await client.post("/v1/chat/completions", json=body)
            except httpx.HTTPError:
                return  # the server was killed
            if response.status_code == 200:
                done += 1

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=5) as client:
        await asyncio.gather(*(worker(client) for _ in range(16)))
    return done


async def test_kill_9_under_load_loses_nothing_committed(tmp_path: Path) -> None:
    server = LiveServer(tmp_path, ENV)
    await asyncio.to_thread(server.start)
    load = asyncio.create_task(hammer(server.url, 10))
    await asyncio.sleep(1.5)  # well into the load: batches are being committed
    assert server.process is not None
    server.process.kill()  # SIGKILL: no shutdown, no drain
    server.process.wait()
    answered = await load
    assert answered > 50

    # The database opens (the service starts on it), and the ledger and its traces verify.
    restarted = LiveServer(tmp_path, ENV)
    await asyncio.to_thread(restarted.start)
    try:
        async with httpx.AsyncClient(
            base_url=restarted.url, headers={"Authorization": f"Bearer {E2E_TOKEN}"}
        ) as client:
            ledger = (await client.get("/v1/trust/ledger/verify")).json()
        assert ledger["verified"], ledger
        assert ledger["entries"] > 0
    finally:
        await asyncio.to_thread(restarted.stop)

    with sqlite3.connect(tmp_path / "instance" / "trace.db") as db:
        db.row_factory = sqlite3.Row
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        traces = db.execute("SELECT * FROM traces").fetchall()
        entries = {row["trace_id"]: dict(row) for row in db.execute("SELECT * FROM trace_ledger")}
        finished = unfinished = 0
        for trace in traces:
            steps = [
                dict(r) for r in db.execute("SELECT * FROM trace_steps WHERE trace_id = ? ORDER BY seq", (trace["id"],))
            ]
            if trace["finished_at"] is not None:
                verdict = verify_trace(
                    trace["id"],
                    steps,
                    ledger_entry=entries.get(trace["id"]),
                    finished=True,
                    recorded_count=trace["step_count"],
                    recorded_head=trace["head_hash"],
                )
                finished += 1
            else:
                verdict = verify_steps(trace["id"], steps)  # cut off by the kill: a valid prefix
                unfinished += 1
            assert verdict.ok, (trace["id"], verdict)
    # Every committed trace verified; those in flight at the kill are at most a batch's worth.
    assert finished == len(entries) > 0
    assert unfinished < answered
