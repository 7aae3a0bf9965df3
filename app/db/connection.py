"""Database connections: SQLite (aiosqlite, WAL) by default, Postgres (asyncpg) when configured.

Repositories write SQL once, in Postgres placeholder style (``$1, $2``); the SQLite connection
rewrites the placeholders to SQLite's numbered form (``?1, ?2``). Rows come back as dicts.
SQL lives only in repositories (``app/*/store.py`` and ``app/db/migrations.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from itertools import chain
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import aiosqlite

from app.errors import DatabaseUnavailable
from app.observability.logging import get_logger

Dialect = Literal["sqlite", "postgres"]
Row = dict[str, Any]
T = TypeVar("T")

log = get_logger("db")

_PLACEHOLDER = re.compile(r"\$(\d+)")
# How long one database call may wait when nothing else says (ORCH_DB_TIMEOUT_SEC): a Postgres
# connect, pool acquire or statement; a SQLite lock held by another connection or process.
DEFAULT_TIMEOUT_S = 3.0
# SQLite's answers that mean "another connection holds the lock" (after the busy timeout).
_SQLITE_LOCK_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_SQLITE_MAX_VARIABLES = 32766  # SQLite's limit on bound parameters per statement (3.32+)
# The bulk writer (receipts) checkpoints its WAL on a thread of its own: at most this often, and
# at least once this long after a write (with synchronous=NORMAL a checkpoint is also the fsync
# that makes what was committed survive a power loss), or sooner once this many rows were written.
CHECKPOINT_INTERVAL_S = 1.0
CHECKPOINT_ROWS = 20_000
# The checkpoint thread runs five nice steps below the event loop (a third of its CPU weight):
# when both share a busy core, the scheduler otherwise lets a checkpoint run on while the woken
# event loop waits.
WRITER_NICE_INCREMENT = 5
_BEGIN_FIRST_WAIT_S = 0.001  # BEGIN on a file another process is writing retries after this, doubling ...
_BEGIN_MAX_WAIT_S = 0.05  # ... up to this


async def _while_busy(attempt: Callable[[], Awaitable[Any]], busy_timeout: float) -> None:
    """Run ``attempt`` until SQLite stops answering SQLITE_BUSY, waiting between tries without
    blocking the loop (from _BEGIN_FIRST_WAIT_S, doubling up to _BEGIN_MAX_WAIT_S), for at most
    ``busy_timeout`` seconds: for the lock waits SQLite's own busy handler does not
    cover (our writer's connection has it off; switching a file to WAL never uses it)."""
    deadline = time.monotonic() + busy_timeout
    wait = _BEGIN_FIRST_WAIT_S
    while True:
        try:
            await attempt()
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(wait)
        wait = min(wait * 2, _BEGIN_MAX_WAIT_S)


def _lower_thread_priority() -> None:
    """Raise the calling thread's nice value (best effort; Linux, where nice is per thread)."""
    if not sys.platform.startswith("linux"):
        return  # elsewhere it would apply to the whole process
    tid = threading.get_native_id()
    # Not permitted (a sandbox)? Checkpoints work the same, at the loop's priority.
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


async def serialise(tx: Any, *parts: str) -> None:
    """Inside a transaction: wait for any other transaction serialised on the same ``parts`` to end
    (check-then-write done atomically, across replicas). Postgres: a transaction-scoped advisory
    lock on a 64-bit key derived from ``parts``. SQLite: nothing to do, its transactions begin
    IMMEDIATE, so writers already take turns."""
    if tx.dialect == "postgres":
        digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
        await tx.execute("SELECT pg_advisory_xact_lock($1)", int.from_bytes(digest[:8], "big", signed=True))


def _sqlite_sql(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


_MAX_ROWS_PER_INSERT = 256


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
    """Synchronous statements inside :meth:`SqliteDatabase.run_transaction` (on the event loop)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.rows_written = 0

    def fetch_one(self, sql: str, *args: Any) -> Row | None:
        row = self._connection.execute(_sqlite_sql(sql), args).fetchone()
        return dict(row) if row is not None else None

    def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        return [dict(row) for row in self._connection.execute(_sqlite_sql(sql), args).fetchall()]

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._connection.executemany(_sqlite_sql(sql), rows)
        self.rows_written += len(rows)

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Iterator[None]:
        """A generator: each step runs one multi-row INSERT (``yield from`` it inside the work)."""
        for sql, params in _insert_statements(table, columns, rows):
            self._connection.execute(sql, params)
            self.rows_written += len(params) // len(columns)
            yield


class SqliteDatabase:
    """One aiosqlite connection per database file, used by one operation at a time.

    aiosqlite runs a connection on its own thread; the lock keeps a statement of one coroutine from
    landing inside another's open transaction. Writes that are not needed to answer a request
    (receipts) are batched by their writer, so this is not a throughput limit. Other processes
    (more uvicorn workers) share the file safely through SQLite's own locking (WAL + busy timeout).
    """

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, *, wal: bool = True, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.path = path
        self.wal = wal
        # A file another process keeps locked (a long write, a backup tool, a stuck process): a
        # statement waits at most this long for its turn on the connection, and at most this long
        # for the other process's lock (SQLite's busy timeout); then 503 database_unavailable.
        self.timeout = timeout
        self._connection: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        # The bulk writer (receipts): a connection of its own used on the event loop, and a thread
        # that checkpoints the WAL (see run_transaction).
        self._bulk: sqlite3.Connection | None = None
        self._bulk_lock = asyncio.Lock()
        self._rows_since_checkpoint = 0
        self._last_checkpoint = 0.0
        self._checkpoint_timer: asyncio.TimerHandle | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._checkpointer: ThreadPoolExecutor | None = None
        self._checkpoint_connection: sqlite3.Connection | None = None

    async def open(self) -> SqliteDatabase:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; transactions are explicit (BEGIN IMMEDIATE below).
        connection = await aiosqlite.connect(self.path, isolation_level=None)
        connection.row_factory = sqlite3.Row
        await connection.execute(f"PRAGMA busy_timeout = {round(self.timeout * 1000)}")
        if self.wal:
            try:
                # Switching a file to WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY at
                # once, without its busy handler, while another connection holds the write lock:
                # another process creating the same new file, or closing its last connection to it.
                # Three processes started together on new files: one stopped, "database is locked".
                await _while_busy(lambda: connection.execute("PRAGMA journal_mode = WAL"), self.timeout)
            except BaseException:
                await connection.close()
                raise
            await connection.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL-safe
        await connection.execute("PRAGMA foreign_keys = ON")
        self._connection = connection
        return self

    @property
    def connection(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise RuntimeError(f"database {self.path} is not open")
        return self._connection

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """This connection for one operation: the wait for the previous one to end is bounded by
        the timeout, and a lock another connection held past the busy timeout is
        DatabaseUnavailable (503), not a failed statement (500)."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._lock.acquire()
        except TimeoutError:
            raise DatabaseUnavailable() from None
        try:
            yield
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in _SQLITE_LOCK_CODES:
                raise DatabaseUnavailable() from exc
            raise
        finally:
            self._lock.release()

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._turn():
            return await _SqliteExecutor(self.connection).execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._turn():
            await _SqliteExecutor(self.connection).executemany(sql, rows)

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        async with self._turn():
            await _SqliteExecutor(self.connection).insert_rows(table, columns, rows)

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        async with self._turn():
            return await _SqliteExecutor(self.connection).fetch_all(sql, *args)

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        async with self._turn():
            return await _SqliteExecutor(self.connection).fetch_one(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteExecutor]:
        async with self._turn():
            connection = self.connection
            # IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading.
            await connection.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteExecutor(connection)
            except BaseException:
                await connection.execute("ROLLBACK")
                raise
            await connection.execute("COMMIT")

    def _bulk_connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError(f"database {self.path} is not open")
        if self._bulk is None:
            # isolation_level=None: transactions are explicit. The file's WAL mode is set by open().
            connection = sqlite3.connect(self.path, isolation_level=None)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA busy_timeout = 0")  # never block the loop: _begin waits
            # A multi-row INSERT's statement journal past 64 KiB would otherwise be a file in /var/tmp.
            connection.execute("PRAGMA temp_store = MEMORY")
            if self.wal:
                connection.execute("PRAGMA synchronous = NORMAL")
                connection.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpoint thread does it
            self._bulk = connection
            self._last_checkpoint = time.monotonic()
        return self._bulk

    async def _begin(self, connection: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, waiting without blocking the loop (up to the busy timeout) while
        another connection holds the write lock."""

        async def begin() -> None:
            connection.execute("BEGIN IMMEDIATE")

        await _while_busy(begin, self.timeout)

    async def run_transaction(self, work: Callable[[SqliteTransaction], Generator[None, None, T]]) -> T:
        """Run ``work`` in one transaction on the bulk writer's own connection, on the event loop.

        For bulk writes that need no await between their statements (the receipts writer). ``work``
        is a generator function: it runs statements and yields between them, and at every yield
        the loop serves other tasks, so no stall is longer than one statement (a multi-row INSERT
        of at most 256 rows) or the COMMIT. Why on the loop: a writer thread on a busy core
        contends with the loop for the GIL and the CPU dozens of times per batch; measured with
        receipts on and chat relayed at 16 connections, that cost as much again as the writes.
        The one long operation, the WAL checkpoint, runs on a thread (see CHECKPOINT_INTERVAL_S).
        Other writers of the file (other processes) are waited for without blocking the loop.
        """
        connection = self._bulk_connection()
        async with self._bulk_lock:
            await self._begin(connection)
            tx = SqliteTransaction(connection)
            try:
                steps = work(tx)
                while True:
                    try:
                        next(steps)
                    except StopIteration as done:
                        result: T = done.value
                        break
                    await asyncio.sleep(0)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        self._rows_since_checkpoint += tx.rows_written
        self._schedule_checkpoint()
        return result

    def _schedule_checkpoint(self) -> None:
        """A checkpoint now if one is due, else when it will be (unless one is already pending)."""
        if self._checkpoint_task is not None or self._checkpoint_timer is not None:
            return
        wait = self._last_checkpoint + CHECKPOINT_INTERVAL_S - time.monotonic()
        if wait > 0 and self._rows_since_checkpoint < CHECKPOINT_ROWS:
            self._checkpoint_timer = asyncio.get_running_loop().call_later(wait, self._start_checkpoint)
            return
        self._start_checkpoint()

    def _start_checkpoint(self) -> None:
        self._checkpoint_timer = None
        if self._bulk is None or self._checkpoint_task is not None:
            return
        self._rows_since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._checkpoint_task = asyncio.get_running_loop().create_task(self._checkpoint(), name="sqlite-checkpoint")

    async def _checkpoint(self) -> None:
        try:
            if self._checkpointer is None:
                self._checkpointer = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="sqlite-checkpoint", initializer=_lower_thread_priority
                )
            await asyncio.get_running_loop().run_in_executor(self._checkpointer, self._checkpoint_on_thread)
        except sqlite3.Error as exc:
            # Not fatal: the WAL keeps every commit, and the next checkpoint copies it all.
            log.warning("WAL checkpoint failed", extra={"error_type": type(exc).__name__, "database": self.path.name})
        finally:
            self._checkpoint_task = None

    def _checkpoint_on_thread(self) -> None:
        connection = self._checkpoint_connection
        if connection is None:
            connection = sqlite3.connect(self.path, isolation_level=None)
            self._checkpoint_connection = connection
        # PASSIVE: copies what it can without waiting for (or blocking) readers and the writer.
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def _close_bulk(self) -> None:
        """After the database is marked closed: no transaction or checkpoint starts any more."""
        if self._bulk is not None:
            async with self._bulk_lock:  # a transaction under way finishes first
                self._bulk.close()
                self._bulk = None
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
        if self._checkpoint_task is not None:
            await self._checkpoint_task
        if self._checkpointer is not None:
            checkpointer, self._checkpointer = self._checkpointer, None
            await asyncio.get_running_loop().run_in_executor(checkpointer, self._close_checkpoint_connection)
            checkpointer.shutdown(wait=True)

    def _close_checkpoint_connection(self) -> None:
        if self._checkpoint_connection is not None:
            self._checkpoint_connection.close()
            self._checkpoint_connection = None

    async def ping(self) -> bool:
        try:
            await self.fetch_one("SELECT 1 AS ok")
        except (sqlite3.Error, ValueError, RuntimeError, DatabaseUnavailable):
            return False
        return True

    async def close(self) -> None:
        connection, self._connection = self._connection, None  # from here on "not open"
        await self._close_bulk()
        if connection is not None:
            await connection.close()


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


# SQLSTATE classes that mean the connection is gone, whatever the statement: 08 connection
# exception, 57 operator intervention (admin shutdown 57P01, crash 57P02, cannot connect now
# 57P03, database dropped 57P04, cancelled 57014).
_LOST_CLASSES = frozenset({"08", "57"})


class PostgresDatabase:
    """An asyncpg pool. Used for every store when ORCH_DATABASE_URL is set."""

    dialect: Dialect = "postgres"

    def __init__(
        self,
        url: str,
        *,
        recycle_seconds: float,
        timeout: float = DEFAULT_TIMEOUT_S,
        min_size: int = 1,
        max_size: int = 10,
    ) -> None:
        self.url = url
        self.recycle_seconds = recycle_seconds
        # The bound of every call: connecting, waiting for a pooled connection, each statement
        # (asyncpg's connect timeout, acquire timeout and command_timeout), and a call's acquire
        # and its one statement together. A server that accepts connections but never answers
        # otherwise holds a request for asyncpg's defaults (60 s to connect, none to acquire).
        self.timeout = timeout
        self.min_size = min_size
        self.max_size = max_size
        self._pool: Any = None
        # Monotonic time until which the server counts as hung: a call timed out, so calls fail at
        # once (503) instead of each waiting out the bound, until a call or a readiness probe
        # (which always tries) gets an answer, or this time passes and calls try again.
        self._hung_until = 0.0
        self._unavailable: tuple[type[BaseException], ...] = (OSError,)
        self._refused: tuple[type[BaseException], ...] = (OSError,)
        self._abandon: tuple[type[BaseException], ...] = (TimeoutError, asyncio.CancelledError)

    async def open(self) -> PostgresDatabase:
        import asyncpg

        # What a lost, refused, overloaded or too slow server raises (TimeoutError is an OSError),
        # whatever the statement; SQLSTATE classes 08 and 57 are recognised by code (_LOST_CLASSES).
        self._unavailable = (
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.TooManyConnectionsError,
            # A pooled connection whose backend was terminated while idle: the server's FATAL
            # 57P01 arrived between statements, and the driver reports its protocol state instead.
            asyncpg.InternalClientError,
        )
        # Whatever the server answers while we connect (a database that refuses connections,
        # 55000; one that was dropped, 3D000; a server starting or stopping, 57P03; a password
        # refused, 28P01) means the database is not there for this request.
        self._refused = (*self._unavailable, asyncpg.PostgresError)
        # After a timeout asyncpg refuses the next statement on the connection (a ROLLBACK) with
        # InterfaceError while its cancel request is under way.
        self._abandon = (TimeoutError, asyncio.CancelledError, asyncpg.InterfaceError)
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=self.min_size,
            max_size=self.max_size,
            max_inactive_connection_lifetime=self.recycle_seconds,
            timeout=self.timeout,  # to connect: TCP, TLS, startup and authentication
            command_timeout=self.timeout,  # each statement (and the cancel request sent after one)
        )
        return self

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the Postgres pool is not open")
        return self._pool

    @asynccontextmanager
    async def _executor(self, *, transaction: bool = False, probe: bool = False) -> AsyncIterator[_PostgresExecutor]:
        """A pooled connection; a server that cannot be reached is DatabaseUnavailable (503).

        Any error while the connection is acquired (the pool connects on demand) is that; once
        connected, only a lost connection (class 08, I/O errors), a call past the bound, or the
        operator's intervention (class 57: shutdown, restart, terminated backend, cancelled
        statement) is, and a genuine query error (a constraint, a syntax error) propagates as it is.

        One statement (``transaction=False``): acquiring and the statement share one bound. A
        transaction: acquiring and each of its statements are bounded. While the server counts as
        hung, calls fail at once; a ``probe`` (readiness) always tries.
        """
        if not probe and self._hung_until and time.monotonic() < self._hung_until:
            raise DatabaseUnavailable()
        connected = False
        try:
            async with asyncio.timeout(None if transaction else self.timeout):
                async with self.pool.acquire(timeout=self.timeout) as connection:
                    connected = True
                    try:
                        if not transaction:
                            yield _PostgresExecutor(connection)
                        else:
                            async with connection.transaction():
                                yield _PostgresExecutor(connection)
                    except self._abandon:
                        # A statement past its bound, or a caller that left, while the server had
                        # not answered: handing the connection back would wait (up to the bound
                        # again) for the server to acknowledge the cancel, and a hung server
                        # never does. The connection is closed instead; the pool opens a new one.
                        connection.terminate()
                        raise
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                self._hung_until = time.monotonic() + self.timeout
            if self._is_outage(exc, connected=connected):
                raise DatabaseUnavailable() from exc
            raise
        self._hung_until = 0.0

    def _is_outage(self, exc: Exception, *, connected: bool) -> bool:
        if not connected:
            return isinstance(exc, self._refused)
        if isinstance(exc, self._unavailable):
            return True
        sqlstate = getattr(exc, "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate[:2] in _LOST_CLASSES

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._executor() as executor:
            return await executor.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._executor() as executor:
            await executor.executemany(sql, rows)

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        async with self._executor() as executor:
            await executor.insert_rows(table, columns, rows)

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        async with self._executor() as executor:
            return await executor.fetch_all(sql, *args)

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        async with self._executor() as executor:
            return await executor.fetch_one(sql, *args)

    @asynccontextmanager
    async def transaction(self, *, probe: bool = False) -> AsyncIterator[_PostgresExecutor]:
        """``probe``: try even while the server counts as hung (work off the request path, such as
        the receipts writer, whose success ends the hung spell for everyone)."""
        async with self._executor(transaction=True, probe=probe) as executor:
            yield executor

    async def ping(self) -> bool:
        try:
            async with self._executor(probe=True) as executor:
                await executor.fetch_one("SELECT 1 AS ok")
        except Exception:
            return False
        return True

    async def close(self) -> None:
        """Close the pool gracefully within the bound; past it (a hung server), drop the connections."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await pool.close()
        except TimeoutError:
            pool.terminate()


def postgres_dsn(url: str) -> str:
    """Accept SQLAlchemy-style URLs too (``postgresql+psycopg://``): asyncpg wants ``postgresql://``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("expected postgresql://user@host:port/database")
    base = scheme.split("+", 1)[0]
    if base not in ("postgresql", "postgres"):
        raise ValueError("expected a postgresql:// URL")
    return f"postgresql://{rest}"
