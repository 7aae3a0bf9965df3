"""The Postgres database's outage mapping, against the real server: a database that is not there
for the request (refusing connections, dropped, shut down, its backend terminated) is
DatabaseUnavailable (503 database_unavailable), a genuine query error is not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.db.connection import PostgresDatabase
from app.errors import DatabaseUnavailable
from tests.conftest import POSTGRES_SERVER


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[PostgresDatabase]:
    database = await PostgresDatabase(postgres_url, recycle_seconds=300).open()
    try:
        assert await database.fetch_one("SELECT 1 AS ok") == {"ok": 1}  # the pool is connected
        yield database
    finally:
        await database.close()


async def admin(sql: str) -> None:
    """A statement run by the operator, from another database of the same server."""
    connection = await asyncpg.connect(f"{POSTGRES_SERVER}/test")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def terminate_backends(name: str) -> str:
    return f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"


async def unavailable_cause(db: PostgresDatabase) -> str:
    """The SQLSTATE behind the DatabaseUnavailable a query on ``db`` raises now."""
    with pytest.raises(DatabaseUnavailable) as caught:
        await db.fetch_one("SELECT 1 AS ok")
    return str(getattr(caught.value.__cause__, "sqlstate", type(caught.value.__cause__).__name__))


async def test_a_database_that_refuses_connections_is_unavailable_until_it_accepts_them(
    db: PostgresDatabase, postgres_url: str
) -> None:
    name = database_name(postgres_url)
    await admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        await admin(terminate_backends(name))
        await asyncio.sleep(0.1)  # the pool sees its connection closed and reconnects on demand
        assert await unavailable_cause(db) == "55000"  # object_not_in_prerequisite_state
    finally:
        await admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert await db.fetch_one("SELECT 1 AS ok") == {"ok": 1}


async def test_a_dropped_database_is_unavailable(db: PostgresDatabase, postgres_url: str) -> None:
    await admin(f'DROP DATABASE "{database_name(postgres_url)}" WITH (FORCE)')
    await asyncio.sleep(0.1)
    assert await unavailable_cause(db) == "3D000"  # invalid_catalog_name


@pytest.mark.parametrize("how", ["pg_terminate_backend", "pg_cancel_backend"])
async def test_a_statement_stopped_by_the_operator_is_unavailable(
    db: PostgresDatabase, postgres_url: str, how: str
) -> None:
    """Terminated (57P01 admin_shutdown, or the connection lost) or cancelled (57014) while it runs."""
    name = database_name(postgres_url)
    query = asyncio.create_task(db.fetch_one("SELECT pg_sleep(30) AS slept"))
    for _ in range(200):
        connection = await asyncpg.connect(f"{POSTGRES_SERVER}/test")
        try:
            running = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'SELECT pg_sleep%'", name
            )
        finally:
            await connection.close()
        if running:
            break
        await asyncio.sleep(0.02)
    await admin(f"SELECT {how}(pid) FROM pg_stat_activity WHERE datname = '{name}' AND query LIKE 'SELECT pg_sleep%'")
    with pytest.raises(DatabaseUnavailable) as caught:
        await asyncio.wait_for(query, 10)
    cause = caught.value.__cause__
    assert isinstance(cause, OSError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError) or (
        getattr(cause, "sqlstate", "")[:2] == "57"
    ), repr(cause)
    assert await db.fetch_one("SELECT 1 AS ok") == {"ok": 1}  # the next request reconnects


@pytest.mark.parametrize(
    ("sql", "args", "error"),
    [
        ("SELECT 1 / 0 AS x", (), asyncpg.DivisionByZeroError),
        ("SELECT * FROM no_such_table", (), asyncpg.UndefinedTableError),
        ("SELECT $1::int AS x", ("not a number",), asyncpg.DataError),  # class 22: a bad parameter
    ],
)
async def test_a_genuine_query_error_is_not_an_outage(
    db: PostgresDatabase, sql: str, args: tuple[object, ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await db.fetch_one(sql, *args)
    with pytest.raises(asyncpg.UniqueViolationError):
        async with db.transaction() as tx:
            await tx.execute("CREATE TABLE t (id int PRIMARY KEY)")
            await tx.execute("INSERT INTO t VALUES (1), (1)")


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.CannotConnectNowError,  # 57P03: the server is starting or shutting down
        asyncpg.exceptions.AdminShutdownError,  # 57P01
        asyncpg.exceptions.CrashShutdownError,  # 57P02
        asyncpg.exceptions.DatabaseDroppedError,  # 57P04
        asyncpg.exceptions.ConnectionFailureError,  # 08006
        # a pooled connection whose backend was terminated while idle, used before the driver
        # noticed: "cannot switch to state 11; another operation (2) is in progress"
        asyncpg.InternalClientError,
    ],
)
async def test_server_states_that_cannot_be_staged_here_are_outages_at_query_time(
    db: PostgresDatabase, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    """What a server that is starting, stopping or crashing answers to a statement."""

    async def refused(*args: object, **kwargs: object) -> None:
        raise error("the server says no")

    async with db.pool.acquire() as connection:
        monkeypatch.setattr(type(connection), "fetchrow", refused)
    with pytest.raises(DatabaseUnavailable):
        await db.fetch_one("SELECT 1 AS ok")
