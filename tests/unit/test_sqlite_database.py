"""The SQLite database's bulk-write path (the receipts writer's): one transaction on its own
connection, run on the event loop a statement at a time, multi-row INSERTs in power-of-two
chunks, WAL checkpoints on a thread. Real SQLite files."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from app.db import connection
from app.db.connection import WRITER_NICE_INCREMENT, Row, SqliteDatabase, SqliteTransaction, _insert_statements

COLUMNS = ("n", "label")


async def _open(tmp_path: Path, **options: Any) -> SqliteDatabase:
    db = await SqliteDatabase(tmp_path / "bulk.db", **options).open()
    await db.execute("CREATE TABLE items (n INTEGER NOT NULL, label TEXT NOT NULL)")
    return db


def test_insert_statements_use_power_of_two_chunks_covering_every_row() -> None:
    rows = [(n, f"item {n}") for n in range(300)]
    statements = list(_insert_statements("items", COLUMNS, rows))
    sizes = [sql.count("(?, ?)") for sql, _ in statements]
    assert sizes == [256, 32, 8, 4]
    params = [value for _, chunk in statements for value in chunk]
    assert params == [value for row in rows for value in row]


def test_insert_statements_respect_the_bound_parameter_limit() -> None:
    columns = tuple(f"c{i}" for i in range(600))  # 600 columns: 256 rows would bind 153,600 values
    statements = list(_insert_statements("wide", columns, [tuple(range(600))] * 100))
    assert all(len(params) <= 32766 for _, params in statements)
    assert sum(len(params) for _, params in statements) == 600 * 100


async def test_run_transaction_commits_every_row_visible_to_the_main_connection(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    try:
        rows = [(n, f"item {n}") for n in range(300)]

        def work(tx: SqliteTransaction) -> Generator[None, None, int]:
            yield from tx.insert_rows("items", COLUMNS, rows)
            found = tx.fetch_one("SELECT COUNT(*) AS n FROM items")
            assert found is not None
            return int(found["n"])

        assert await db.run_transaction(work) == 300
        stored = await db.fetch_all("SELECT n, label FROM items ORDER BY rowid")
        assert [(row["n"], row["label"]) for row in stored] == rows
    finally:
        await db.close()


def _insert(*rows: tuple[int, str]) -> Callable[[SqliteTransaction], Generator[None, None, None]]:
    def work(tx: SqliteTransaction) -> Generator[None, None, None]:
        yield from tx.insert_rows("items", COLUMNS, rows)

    return work


async def test_a_failed_transaction_stores_nothing_and_the_writer_keeps_working(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    try:
        await db.run_transaction(_insert((1, "kept")))

        def failing(tx: SqliteTransaction) -> Generator[None, None, None]:
            yield from tx.insert_rows("items", COLUMNS, [(2, "lost"), (3, "lost")])
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await db.run_transaction(failing)

        def update(tx: SqliteTransaction) -> Generator[None, None, None]:
            tx.executemany("UPDATE items SET label = $1 WHERE n = $2", [("x", 1)])
            yield

        await db.run_transaction(update)
        stored = await db.fetch_all("SELECT n, label FROM items")
        assert stored == [{"n": 1, "label": "x"}]
    finally:
        await db.close()


async def test_run_transaction_on_a_closed_database_is_refused(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    await db.run_transaction(_insert((1, "a")))
    await db.close()
    with pytest.raises(RuntimeError, match="not open"):
        await db.run_transaction(_insert((2, "b")))


async def test_other_tasks_run_between_the_statements_of_a_transaction(tmp_path: Path) -> None:
    """The transaction runs on the event loop: a statement at a time, never the whole batch."""
    db = await _open(tmp_path)
    try:
        ticks: list[int] = []
        seen: list[int] = []

        async def ticker() -> None:
            while True:
                ticks.append(len(ticks))
                await asyncio.sleep(0)

        def work(tx: SqliteTransaction) -> Generator[None, None, None]:
            for statement in tx.insert_rows("items", COLUMNS, [(n, "x") for n in range(600)]):
                seen.append(len(ticks))
                yield statement

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        await db.run_transaction(work)
        task.cancel()
        assert len(seen) == 5  # one step per INSERT: 2 x 256 + 64 + 16 + 8 rows
        assert seen == sorted(set(seen)), "the ticker ran between every two statements"
        assert (await db.fetch_one("SELECT COUNT(*) AS n FROM items")) == {"n": 600}
    finally:
        await db.close()


async def test_begin_waits_for_another_writer_without_blocking_the_loop(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    other = sqlite3.connect(tmp_path / "bulk.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
        write = asyncio.create_task(db.run_transaction(_insert((1, "after"))))
        loop_turns = 0
        for _ in range(20):  # the loop keeps turning while the write waits
            await asyncio.sleep(0.005)
            loop_turns += 1
        assert not write.done()
        other.execute("INSERT INTO items VALUES (0, 'other')")
        other.execute("COMMIT")
        await asyncio.wait_for(write, 5)
        stored = await db.fetch_all("SELECT n, label FROM items ORDER BY n")
        assert stored == [{"n": 0, "label": "other"}, {"n": 1, "label": "after"}]
        assert loop_turns == 20
    finally:
        other.close()
        await db.close()


async def test_open_waits_while_another_process_creates_the_same_new_file(tmp_path: Path) -> None:
    # Another process got to the new file first and holds its write lock (switching it to WAL
    # writes the header; a migration runs in BEGIN IMMEDIATE): SQLite answers this one's switch
    # to WAL with SQLITE_BUSY at once, without its busy handler. Several processes started
    # together on new files: one stopped with "database is locked".
    path = tmp_path / "shared.db"
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("CREATE TABLE first (n INTEGER)")
        opening = asyncio.create_task(SqliteDatabase(path).open())
        await asyncio.sleep(0.2)
        assert not opening.done()
        other.execute("COMMIT")
        db = await asyncio.wait_for(opening, 5)
        try:
            assert await db.fetch_one("PRAGMA journal_mode") == {"journal_mode": "wal"}
            assert await db.fetch_all("SELECT name FROM sqlite_master") == [{"name": "first"}]
        finally:
            await db.close()
    finally:
        other.close()


async def test_begin_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    db = await _open(tmp_path, timeout=0.05)
    other = sqlite3.connect(tmp_path / "bulk.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await db.run_transaction(_insert((1, "never")))
        other.execute("ROLLBACK")
        await db.run_transaction(_insert((2, "later")))  # and the writer still works afterwards
        assert await db.fetch_all("SELECT n FROM items") == [{"n": 2}]
    finally:
        other.close()
        await db.close()


async def _wal_copied_to_the_database(path: Path, size_before: int, timeout: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if path.stat().st_size > size_before:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_the_wal_is_checkpointed_on_a_thread_once_the_interval_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "CHECKPOINT_INTERVAL_S", 0.2)
    db = await _open(tmp_path)
    try:
        size = db.path.stat().st_size
        await db.run_transaction(_insert(*[(n, "x" * 200) for n in range(200)]))
        # Committed to the WAL only: the commit itself does not checkpoint (wal_autocheckpoint=0) ...
        assert db.path.stat().st_size == size
        # ... the checkpoint thread does, within the interval, with no further write to wake it.
        assert await _wal_copied_to_the_database(db.path, size)
    finally:
        await db.close()


async def test_many_rows_are_checkpointed_before_the_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "CHECKPOINT_INTERVAL_S", 3600.0)
    monkeypatch.setattr(connection, "CHECKPOINT_ROWS", 100)
    db = await _open(tmp_path)
    try:
        size = db.path.stat().st_size
        await db.run_transaction(_insert(*[(n, "x" * 200) for n in range(200)]))
        assert await _wal_copied_to_the_database(db.path, size)
    finally:
        await db.close()


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a per-thread nice value is Linux behaviour")
async def test_the_checkpoint_thread_runs_below_the_event_loop_and_leaves_it_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "CHECKPOINT_ROWS", 1)
    db = await _open(tmp_path)
    try:
        before, size = _nice(), db.path.stat().st_size
        await db.run_transaction(_insert((1, "a" * 5000)))
        assert await _wal_copied_to_the_database(db.path, size)
        assert db._checkpointer is not None
        checkpointer = await asyncio.get_running_loop().run_in_executor(db._checkpointer, _nice)
        assert checkpointer == min(before + WRITER_NICE_INCREMENT, 19)
        assert _nice() == before  # the event loop's thread keeps its priority
    finally:
        await db.close()


async def test_the_bulk_connection_keeps_temporary_files_in_memory_and_leaves_checkpoints_to_the_thread(
    tmp_path: Path,
) -> None:
    """Otherwise a multi-row INSERT's statement journal over 64 KiB becomes a file in /var/tmp."""
    db = await _open(tmp_path)
    try:

        def pragmas(tx: SqliteTransaction) -> Generator[None, None, tuple[Row | None, Row | None]]:
            yield
            return tx.fetch_one("PRAGMA temp_store"), tx.fetch_one("PRAGMA wal_autocheckpoint")

        temp_store, autocheckpoint = await db.run_transaction(pragmas)
        assert temp_store == {"temp_store": 2}  # MEMORY
        assert autocheckpoint == {"wal_autocheckpoint": 0}
    finally:
        await db.close()


async def test_close_lets_a_transaction_under_way_commit_and_stops_the_checkpoint_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "CHECKPOINT_ROWS", 1)
    db = await _open(tmp_path)
    rows = [(n, "x" * 100) for n in range(300)]  # three INSERTs: the write yields twice
    write = asyncio.create_task(db.run_transaction(_insert(*rows)))
    await asyncio.sleep(0)  # the write has begun its transaction
    await db.close()
    await write
    assert not [t for t in threading.enumerate() if t.name.startswith("sqlite-checkpoint")]
    reopened = await SqliteDatabase(tmp_path / "bulk.db").open()
    try:
        assert await reopened.fetch_one("SELECT COUNT(*) AS n FROM items") == {"n": 300}
    finally:
        await reopened.close()
