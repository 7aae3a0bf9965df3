"""Database connections: SQLite (aiosqlite, WAL) by default, Postgres (asyncpg) when configured.

Repositories write SQL once, in Postgres placeholder style (``$1, $2``); the SQLite connection
rewrites the placeholders to SQLite's numbered form (``?1, ?2``). Rows come back as dicts.
SQL lives only in repositories (``app/*/store.py`` and ``app/db/migrations.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from itertools import chain
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import aiosqlite

Dialect = Literal["sqlite", "postgres"]
Row = dict[str, Any]
T = TypeVar("T")

_PLACEHOLDER = re.compile(r"\$(\d+)")
_SQLITE_BUSY_TIMEOUT_MS = 5000  # wait this long for another process's write lock
_SQLITE_MAX_VARIABLES = 32766  # SQLite's limit on bound parameters per statement (3.32+)
# The bulk writer's thread runs five nice steps below the event loop (a third of its CPU weight).
# When both share a busy core, the scheduler otherwise lets a batch's SQLite work run on while the
# woken event loop waits: receipts added 0.1-0.15 ms to a demo chat's p50 latency at one
# connection (about +40%); with it, 0.03-0.1 ms. A third still keeps up under full load (at ten
# steps the writer fell behind).
WRITER_NICE_INCREMENT = 5


def _lower_thread_priority() -> None:
    """Raise the calling thread's nice value (best effort; Linux, where nice is per thread)."""
    if not sys.platform.startswith("linux"):
        return  # elsewhere it would apply to the whole process
    tid = threading.get_native_id()
    # Not permitted (a sandbox)? The writer works the same, at the loop's priority.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICE_INCREMENT)


class Executor(Protocol):
    """What a repository can do: on the database, or inside one of its transactions."""

    dialect: Dialect

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; return the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert many rows (names are trusted constants from a repository, values are bound)."""
        ...

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetch_one(self, sql: str, *args: Any) -> Row | None: ...


class Database(Executor, Protocol):
    def transaction(self) -> Any:
        """``async with db.transaction() as tx:`` - an :class:`Executor` that commits or rolls back."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


def _sqlite_sql(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


_MAX_ROWS_PER_INSERT = 128


def _insert_statements(
    table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> Iterator[tuple[str, list[Any]]]:
    """Multi-row INSERTs for ``rows``, in chunks whose sizes are powers of two.

    One statement per chunk rather than executemany: the sqlite3 module hands the GIL back and
    forth with the event loop's thread for every row of an executemany, which on a busy single
    core costs more than the inserts themselves. Power-of-two sizes keep the set of statement
    texts small, so the connection's statement cache compiles each once (compiling a statement
    of a few hundred rows costs more than running it).
    """
    width = len(columns)
    largest = _MAX_ROWS_PER_INSERT
    while largest > 1 and largest * width > _SQLITE_MAX_VARIABLES:
        largest //= 2
    group = "(" + ", ".join("?" * width) + ")"
    # Names are repository constants; every value is a bound parameter.
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # noqa: S608
    start, size = 0, largest
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        chunk = rows[start : start + size]
        yield head + ", ".join([group] * size), list(chain.from_iterable(chunk))
        start += size


class _SqliteExecutor:
    dialect: Dialect = "sqlite"

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def execute(self, sql: str, *args: Any) -> int:
        cursor = await self._connection.execute(_sqlite_sql(sql), args)
        count = cursor.rowcount
        await cursor.close()
        return count

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._connection.executemany(_sqlite_sql(sql), rows)

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        for sql, params in _insert_statements(table, columns, rows):
            await (await self._connection.execute(sql, params)).close()

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        async with self._connection.execute(_sqlite_sql(sql), args) as cursor:
            return [dict(row) for row in await cursor.fetchall()]

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        async with self._connection.execute(_sqlite_sql(sql), args) as cursor:
            row = await cursor.fetchone()
        return dict(row) if row is not None else None


class SqliteTransaction:
    """Synchronous statements inside :meth:`SqliteDatabase.run_transaction` (on its writer thread)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def fetch_one(self, sql: str, *args: Any) -> Row | None:
        row = self._connection.execute(_sqlite_sql(sql), args).fetchone()
        return dict(row) if row is not None else None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._connection.executemany(_sqlite_sql(sql), rows)

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        for sql, params in _insert_statements(table, columns, rows):
            self._connection.execute(sql, params)


class SqliteDatabase:
    """One aiosqlite connection per database file, used by one operation at a time.

    aiosqlite runs a connection on its own thread; the lock keeps a statement of one coroutine from
    landing inside another's open transaction. Writes that are not needed to answer a request
    (receipts) are batched by their writer, so this is not a throughput limit. Other processes
    (more uvicorn workers) share the file safely through SQLite's own locking (WAL + busy timeout).
    """

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, *, wal: bool = True) -> None:
        self.path = path
        self.wal = wal
        self._connection: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        # Bulk writers (receipts) get a connection of their own on a thread of their own: a whole
        # transaction is one hand-off between threads (each costs tens of microseconds of CPU).
        self._writer: ThreadPoolExecutor | None = None
        self._writer_connection: sqlite3.Connection | None = None

    async def open(self) -> SqliteDatabase:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; transactions are explicit (BEGIN IMMEDIATE below).
        connection = await aiosqlite.connect(self.path, isolation_level=None)
        connection.row_factory = sqlite3.Row
        await connection.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
        if self.wal:
            await connection.execute("PRAGMA journal_mode = WAL")
            await connection.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL-safe
        await connection.execute("PRAGMA foreign_keys = ON")
        self._connection = connection
        return self

    @property
    def connection(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise RuntimeError(f"database {self.path} is not open")
        return self._connection

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            return await _SqliteExecutor(self.connection).execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._lock:
            await _SqliteExecutor(self.connection).executemany(sql, rows)

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        async with self._lock:
            await _SqliteExecutor(self.connection).insert_rows(table, columns, rows)

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        async with self._lock:
            return await _SqliteExecutor(self.connection).fetch_all(sql, *args)

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        async with self._lock:
            return await _SqliteExecutor(self.connection).fetch_one(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteExecutor]:
        async with self._lock:
            connection = self.connection
            # IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading.
            await connection.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteExecutor(connection)
            except BaseException:
                await connection.execute("ROLLBACK")
                raise
            await connection.execute("COMMIT")

    def _transact(self, work: Callable[[SqliteTransaction], T]) -> T:
        """On the writer thread: ``work`` between BEGIN IMMEDIATE and COMMIT (ROLLBACK on error)."""
        connection = self._writer_connection
        if connection is None:
            # isolation_level=None: transactions are explicit. The file's WAL mode is set by open().
            connection = sqlite3.connect(self.path, isolation_level=None)
            connection.row_factory = sqlite3.Row
            connection.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA temp_store = MEMORY")
            if self.wal:
                connection.execute("PRAGMA synchronous = NORMAL")
            self._writer_connection = connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(SqliteTransaction(connection))
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return result

    async def run_transaction(self, work: Callable[[SqliteTransaction], T]) -> T:
        """Run ``work`` in one transaction on the writer's own connection and thread.

        For bulk writes that need no await between their statements (the receipts writer): the
        whole transaction costs one thread hand-off instead of one per statement. Other writers
        of the file (this database's main connection, other processes) are serialised by SQLite's
        lock and the busy timeout, as any two connections are.
        """
        if self._connection is None:
            raise RuntimeError(f"database {self.path} is not open")
        if self._writer is None:
            self._writer = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="sqlite-writer", initializer=_lower_thread_priority
            )
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._transact, work)

    def _close_writer(self) -> None:
        if self._writer_connection is not None:
            self._writer_connection.close()
            self._writer_connection = None

    async def ping(self) -> bool:
        try:
            await self.fetch_one("SELECT 1 AS ok")
        except (sqlite3.Error, ValueError, RuntimeError):
            return False
        return True

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.get_running_loop().run_in_executor(writer, self._close_writer)
            writer.shutdown(wait=True)
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


def _command_count(status: str) -> int:
    """asyncpg's command tag ("UPDATE 3", "INSERT 0 1") -> the row count."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _PostgresExecutor:
    dialect: Dialect = "postgres"

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def execute(self, sql: str, *args: Any) -> int:
        return _command_count(await self._connection.execute(sql, *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._connection.executemany(sql, list(rows))

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608 - constant names
        await self._connection.executemany(sql, rows)

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        return [dict(row) for row in await self._connection.fetch(sql, *args)]

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        row = await self._connection.fetchrow(sql, *args)
        return dict(row) if row is not None else None


class PostgresDatabase:
    """An asyncpg pool. Used for every store when ORCH_DATABASE_URL is set."""

    dialect: Dialect = "postgres"

    def __init__(self, url: str, *, recycle_seconds: float, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self.recycle_seconds = recycle_seconds
        self.min_size = min_size
        self.max_size = max_size
        self._pool: Any = None

    async def open(self) -> PostgresDatabase:
        import asyncpg

        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=self.min_size,
            max_size=self.max_size,
            max_inactive_connection_lifetime=self.recycle_seconds,
            command_timeout=30,
        )
        return self

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the Postgres pool is not open")
        return self._pool

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.pool.acquire() as connection:
            return await _PostgresExecutor(connection).execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.pool.acquire() as connection:
            await _PostgresExecutor(connection).executemany(sql, rows)

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        async with self.pool.acquire() as connection:
            await _PostgresExecutor(connection).insert_rows(table, columns, rows)

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        async with self.pool.acquire() as connection:
            return await _PostgresExecutor(connection).fetch_all(sql, *args)

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        async with self.pool.acquire() as connection:
            return await _PostgresExecutor(connection).fetch_one(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PostgresExecutor]:
        async with self.pool.acquire() as connection, connection.transaction():
            yield _PostgresExecutor(connection)

    async def ping(self) -> bool:
        try:
            await self.fetch_one("SELECT 1 AS ok")
        except Exception:
            return False
        return True

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def postgres_dsn(url: str) -> str:
    """Accept SQLAlchemy-style URLs too (``postgresql+psycopg://``): asyncpg wants ``postgresql://``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("expected postgresql://user@host:port/database")
    base = scheme.split("+", 1)[0]
    if base not in ("postgresql", "postgres"):
        raise ValueError("expected a postgresql:// URL")
    return f"postgresql://{rest}"
