"""A database that accepts connections but never answers (the real Postgres behind a proxy that
stops forwarding, a SQLite file another process keeps locked): every route that needs it answers
503 database_unavailable within about ORCH_DB_TIMEOUT_SEC, chat keeps answering, and once the
database answers again the service recovers with nothing it had stored lost."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.db.connection import PostgresDatabase
from app.errors import DatabaseUnavailable
from app.lifespan import StartupError
from tests.api.tools_support import APPROVAL_POLICY, APPROVE, APPROVER, APPROVER_HEADERS, EXECUTE, write_policy
from tests.conftest import assert_envelope, running
from tests.fakes.tcp_proxy import tcp_proxy

CHAT = "/v1/chat/completions"
MEMORY = "/v1/memory"
APPROVALS = "/v1/tools/approvals"
BOUND = 1.5  # ORCH_DB_TIMEOUT_SEC in these tests
ANSWERS_WITHIN = BOUND + 3.0  # generous: "about the bound", not a minute
CALC = {"expression": "6*7"}
MEMORY_ON = {
    "memory_enabled": True,
    "memory_capture_enabled": True,
    "memory_recall_enabled": True,
    "memory_write_policy": "strict",
}


def said(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


async def timed(call: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    """The response and how long it took; a call still waiting after 20 s fails the test."""
    start = time.monotonic()
    response = await asyncio.wait_for(call, 20)
    return response, time.monotonic() - start


def unavailable(response: httpx.Response) -> None:
    error = assert_envelope(response, 503, type_="service_unavailable")
    assert error["code"] == "database_unavailable", error


async def until_answered(call: Callable[[], Awaitable[httpx.Response]], within: float = 15.0) -> httpx.Response:
    """Repeat ``call`` until it is not a 503 (the database answers again)."""
    deadline = time.monotonic() + within
    while True:
        response = await call()
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


async def test_a_hung_postgres_costs_a_request_the_bound_then_the_service_recovers(
    app_factory: Callable[..., FastAPI], postgres_url: str, tmp_path: Path
) -> None:
    async with tcp_proxy("127.0.0.1", 5432) as proxy:
        url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        app = app_factory(
            database_url=url,
            db_timeout_sec=BOUND,
            approver_token=APPROVER,
            tool_policy_path=write_policy(tmp_path, APPROVAL_POLICY),
            trust_panel_enabled=True,
            **MEMORY_ON,
        )
        async with running(app) as client:
            # Stored before the database hangs: a memory, an approval, a receipt.
            stored = await client.post(MEMORY, json={"content": "my favourite tea is sencha"})
            assert stored.status_code == 201, stored.text
            approval = await client.post(APPROVE, json={"name": "safe_calc", "args": CALC}, headers=APPROVER_HEADERS)
            assert approval.status_code == 200, approval.text
            token = approval.json()["approval_id"]
            before = await client.post(CHAT, json=said("hello before"))
            assert before.status_code == 200
            await app.state.orch.tracer.flush()
            trace_id = before.json()["request_id"]

            proxy.freeze()
            (
                (chat, chat_s),
                (memories, memory_s),
                (execute, execute_s),
                (approvals, approvals_s),
                (ready, ready_s),
            ) = await asyncio.gather(
                # memory on: the gate's capture and the recall both need the database
                timed(client.post(CHAT, json=said("remember that my cat is called Tom"))),
                timed(client.get(MEMORY)),
                timed(client.post(EXECUTE, json={"name": "safe_calc", "args": CALC, "approval_token": token})),
                timed(client.get(APPROVALS, headers=APPROVER_HEADERS)),
                timed(client.get("/ready")),
            )
            assert chat.status_code == 200, chat.text
            assert chat.json()["choices"][0]["message"]["content"]
            unavailable(memories)
            unavailable(execute)
            unavailable(approvals)
            assert ready.status_code == 503 and ready.json()["reason"] == "database_unavailable", ready.text
            durations = {"chat": chat_s, "memory": memory_s, "execute": execute_s, "approvals": approvals_s}
            durations["ready"] = ready_s
            assert max(durations.values()) < ANSWERS_WITHIN, durations

            # Still hung: the next requests do not each wait the bound out again.
            again, again_s = await timed(client.post(CHAT, json=said("hello while hung")))
            assert again.status_code == 200 and again_s < ANSWERS_WITHIN

            proxy.resume()
            listed = await until_answered(lambda: client.get(MEMORY))
            assert listed.status_code == 200, listed.text
            assert [m["content"] for m in listed.json()["data"]] == ["my favourite tea is sencha"]
            # The approval was not consumed by the call that failed: it still runs the tool once.
            usable = await until_answered(
                lambda: client.get(APPROVALS, params={"status": "approved"}, headers=APPROVER_HEADERS)
            )
            assert token in {a["approval_id"] for a in usable.json()["data"]}, usable.text
            ran = await client.post(EXECUTE, json={"name": "safe_calc", "args": CALC, "approval_token": token})
            assert ran.status_code == 200 and ran.json()["result"]["status"] == "ok", ran.text
            verified = await client.get(f"/v1/trust/verify/{trace_id}")
            assert verified.status_code == 200 and verified.json()["verified"] is True, verified.text
            after = await client.post(CHAT, json=said("hello after"))
            assert after.status_code == 200
            await app.state.orch.tracer.flush()
            receipt = await client.get(f"/v1/trust/verify/{after.json()['request_id']}")
            assert receipt.status_code == 200 and receipt.json()["verified"] is True, receipt.text
            assert (await until_answered(lambda: client.get("/ready"))).status_code in (200, 503)
            ready_checks = (await client.get("/ready")).json().get("checks", {})
            assert ready_checks.get("trace_database") == "ok", ready_checks
            assert ready_checks.get("memory_database") == "ok", ready_checks


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's connection that holds the file's write lock (a long write, a stuck
    process, someone in the sqlite3 shell after BEGIN IMMEDIATE)."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_a_locked_sqlite_file_is_503_within_the_bound(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    """Writes wait for the lock at most the bound (SQLite's busy timeout), and so do the calls
    queued behind them on the store's connection: then 503, not 500 after the old fixed 5 s."""
    memory_db, approvals_db = tmp_path / "memory.db", tmp_path / "approvals.db"
    app = app_factory(
        memory_db_path=memory_db,
        tool_approval_db_path=approvals_db,
        db_timeout_sec=BOUND,
        approver_token=APPROVER,
        tool_policy_path=write_policy(tmp_path, APPROVAL_POLICY),
        **MEMORY_ON,
    )
    async with running(app) as client:
        stored = await client.post(MEMORY, json={"content": "my favourite tea is sencha"})
        assert stored.status_code == 201, stored.text
        holders = [await asyncio.to_thread(_hold_write_lock, path) for path in (memory_db, approvals_db)]
        try:
            results = await asyncio.gather(
                *(timed(client.delete(MEMORY)) for _ in range(3)),  # queued behind one another
                timed(client.post(APPROVE, json={"name": "safe_calc", "args": CALC}, headers=APPROVER_HEADERS)),
            )
            for response, _ in results:
                unavailable(response)
            chat, chat_s = await timed(client.post(CHAT, json=said("hello")))
            assert chat.status_code == 200
            durations = [chat_s, *(seconds for _, seconds in results)]
            assert max(durations) < ANSWERS_WITHIN + BOUND, durations
            # Reading goes on meanwhile (WAL: readers do not wait for the writer).
            assert (await client.get(MEMORY)).status_code == 200
        finally:
            for holder in holders:
                await asyncio.to_thread(holder.close)
        listed = await client.get(MEMORY)
        assert listed.status_code == 200, listed.text
        assert [m["content"] for m in listed.json()["data"]] == ["my favourite tea is sencha"]
        issued = await client.post(APPROVE, json={"name": "safe_calc", "args": CALC}, headers=APPROVER_HEADERS)
        assert issued.status_code == 200, issued.text


async def test_a_database_that_hangs_once_connected_stops_startup_with_one_clear_line(
    app_factory: Callable[..., FastAPI], postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connected, then no answer while the stores migrate: StartupError (one line, exit 3 under
    the server) within about the bound, not a traceback after asyncpg's defaults."""
    async with tcp_proxy("127.0.0.1", 5432) as proxy:
        url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        opened = PostgresDatabase.open

        async def open_then_hang(self: PostgresDatabase) -> PostgresDatabase:
            database = await opened(self)
            proxy.freeze()
            return database

        monkeypatch.setattr(PostgresDatabase, "open", open_then_hang)
        app = app_factory(database_url=url, db_timeout_sec=BOUND)
        start = time.monotonic()
        with pytest.raises(StartupError) as raised:
            await asyncio.wait_for(running(app).__aenter__(), 20)
        took = time.monotonic() - start
    assert str(raised.value) == (
        f"cannot use the Postgres database (ORCH_DATABASE_URL): no answer within ORCH_DB_TIMEOUT_SEC={BOUND:g} s"
    )
    assert took < ANSWERS_WITHIN + BOUND, took  # the migration's statement, then closing the pool


async def test_after_a_timeout_calls_fail_at_once_until_the_server_answers_again(postgres_url: str) -> None:
    """The hung spell: the first call waits the bound, the next fail at once (a chat that needs two
    calls waits once); a probe always tries and ends the spell as soon as the server answers; and
    closing the pool of a hung server is bounded too."""
    async with tcp_proxy("127.0.0.1", 5432) as proxy:
        url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        db = await PostgresDatabase(url, recycle_seconds=300, timeout=BOUND).open()
        try:
            assert await db.fetch_one("SELECT 1 AS n") == {"n": 1}
            proxy.freeze()
            start = time.monotonic()
            with pytest.raises(DatabaseUnavailable):
                await db.fetch_one("SELECT 2 AS n")
            first = time.monotonic() - start
            start = time.monotonic()
            for _ in range(3):
                with pytest.raises(DatabaseUnavailable):
                    await db.fetch_one("SELECT 3 AS n")
            following = time.monotonic() - start
            assert BOUND - 0.2 < first < ANSWERS_WITHIN, first
            assert following < BOUND / 2, following
            assert not await db.ping()  # the probe tried (and waited the bound)
            proxy.resume()
            assert await db.ping()  # at once: no waiting out the spell
            assert await db.fetch_one("SELECT 4 AS n") == {"n": 4}
            proxy.freeze()
            start = time.monotonic()
        finally:
            await db.close()
        assert time.monotonic() - start < ANSWERS_WITHIN
