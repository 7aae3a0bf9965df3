"""Shared fixtures: every test builds its own app from a Settings object and its own temp files."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings

TOKEN = "test-owner-token-0123456789"
ROOT = Path(__file__).resolve().parents[1]


def build_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for one test: no .env file, files under tmp_path, a known owner token."""
    values: dict[str, Any] = {
        "bearer_token": TOKEN,
        "dev_token_path": tmp_path / "dev-token",
        "trace_db_path": tmp_path / "trace.db",
        "trust_signing_key_path": tmp_path / "trust-signing-key",
        "intent_cache_db_path": tmp_path / "intent_cache.db",  # routing stores
        "intent_hitl_db_path": tmp_path / "hitl_queue.db",
        "trace_flush_interval_ms": 5,
        "rate_limit": "1000 per minute",
        "log_json": True,
        # tools: the repo's policy, approvals in tmp_path, no pre-started sandbox
        # containers unless a test asks for them (every app would otherwise start a pool)
        "tool_policy_path": ROOT / "policies" / "tool_policy.yaml",
        "tool_approval_db_path": tmp_path / "tool_approvals.db",
        "sandbox_pool_size": 0,
        "memory_db_path": tmp_path / "memory.db",  # memory, used only when enabled
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def running(app: FastAPI, *, token: str | None = TOKEN) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and give an httpx client talking to it in-process."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers) as client:
            yield client


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return build_settings(tmp_path, **overrides)

    return make


@pytest.fixture
def app_factory(settings_factory: Callable[..., Settings]) -> Callable[..., FastAPI]:
    def make(**overrides: Any) -> FastAPI:
        return create_app(settings_factory(**overrides))

    return make


@pytest.fixture
async def client(app_factory: Callable[..., FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app_factory()) as c:
        yield c


def assert_envelope(
    response: httpx.Response, status: int, *, type_: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The response is the OpenAI error envelope with this status; returns the error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if type_ is not None:
        assert body["error"]["type"] == type_, body
    if param is not None:
        assert body["error"]["param"] == param, body
    assert "x-request-id" in response.headers
    error: dict[str, Any] = body["error"]
    return error


# --- databases: every store is tested on SQLite and on the real Postgres server -------------------

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"


def _psql(sql: str) -> None:
    """Run an admin statement against the real server (fails, never skips, when it is missing)."""
    result = subprocess.run(
        ["psql", f"{POSTGRES_SERVER}/test", "-v", "ON_ERROR_STOP=1", "-qc", sql],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"Postgres at {POSTGRES_SERVER} is required for these tests: {result.stderr.strip()}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty Postgres database for one test, dropped afterwards."""
    name = "orch_test_" + uuid.uuid4().hex[:12]
    _psql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Backend:
    """Which database a test runs on, the settings that select it, and raw access for tampering."""

    name: str
    settings: dict[str, Any]
    url: str = ""

    async def execute(self, sql: str, *args: Any) -> None:
        """Run SQL directly on the store's database, as an attacker with DB access would."""
        if self.name == "postgres":
            connection = await asyncpg.connect(self.url)
            try:
                await connection.execute(sql, *args)
            finally:
                await connection.close()
            return
        # Off the event loop, as another process would be: the service's receipts writer holds the
        # write lock across its own awaits, so a blocking wait here would wait for itself.
        await asyncio.to_thread(self._sqlite_execute, sql, args)

    def _sqlite_execute(self, sql: str, args: tuple[Any, ...]) -> None:
        with sqlite3.connect(self.settings["trace_db_path"]) as connection:
            connection.execute(re.sub(r"\$(\d+)", r"?\1", sql), args)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if self.name == "postgres":
            connection = await asyncpg.connect(self.url)
            try:
                return [dict(row) for row in await connection.fetch(sql, *args)]
            finally:
                await connection.close()
        return await asyncio.to_thread(self._sqlite_fetch, sql, args)

    def _sqlite_fetch(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with sqlite3.connect(self.settings["trace_db_path"]) as connection:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute(re.sub(r"\$(\d+)", r"?\1", sql), args)]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", {"trace_db_path": tmp_path / "trace.db"})
    url = request.getfixturevalue("postgres_url")
    return Backend("postgres", {"database_url": url, "trace_db_path": tmp_path / "unused.db"}, url)
