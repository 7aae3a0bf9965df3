"""The SQLite database's bulk-write path (the receipts writer's): one transaction on its own
connection and thread, multi-row INSERTs in power-of-two chunks. Real SQLite files."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from app.db.connection import WRITER_NICE_INCREMENT, SqliteDatabase, SqliteTransaction, _insert_statements

COLUMNS = ("n", "label")


async def _open(tmp_path: Path) -> SqliteDatabase:
    db = await SqliteDatabase(tmp_path / "bulk.db").open()
    await db.execute("CREATE TABLE items (n INTEGER NOT NULL, label TEXT NOT NULL)")
    return db


def test_insert_statements_use_power_of_two_chunks_covering_every_row() -> None:
    rows = [(n, f"item {n}") for n in range(300)]
    statements = list(_insert_statements("items", COLUMNS, rows))
    sizes = [sql.count("(?, ?)") for sql, _ in statements]
    assert sizes == [128, 128, 32, 8, 4]
    params = [value for _, chunk in statements for value in chunk]
    assert params == [value for row in rows for value in row]


def test_insert_statements_respect_the_bound_parameter_limit() -> None:
    columns = tuple(f"c{i}" for i in range(600))  # 600 columns: 128 rows would bind 76,800 values
    statements = list(_insert_statements("wide", columns, [tuple(range(600))] * 100))
    assert all(len(params) <= 32766 for _, params in statements)
    assert sum(len(params) for _, params in statements) == 600 * 100


async def test_run_transaction_commits_every_row_visible_to_the_main_connection(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    try:
        rows = [(n, f"item {n}") for n in range(300)]

        def work(tx: SqliteTransaction) -> int:
            tx.insert_rows("items", COLUMNS, rows)
            found = tx.fetch_one("SELECT COUNT(*) AS n FROM items")
            assert found is not None
            return int(found["n"])

        assert await db.run_transaction(work) == 300
        stored = await db.fetch_all("SELECT n, label FROM items ORDER BY rowid")
        assert [(row["n"], row["label"]) for row in stored] == rows
    finally:
        await db.close()


async def test_a_failed_transaction_stores_nothing_and_the_writer_keeps_working(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    try:
        await db.run_transaction(lambda tx: tx.insert_rows("items", COLUMNS, [(1, "kept")]))

        def failing(tx: SqliteTransaction) -> None:
            tx.insert_rows("items", COLUMNS, [(2, "lost"), (3, "lost")])
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await db.run_transaction(failing)
        await db.run_transaction(lambda tx: tx.executemany("UPDATE items SET label = $1 WHERE n = $2", [("x", 1)]))
        stored = await db.fetch_all("SELECT n, label FROM items")
        assert stored == [{"n": 1, "label": "x"}]
    finally:
        await db.close()


async def test_run_transaction_on_a_closed_database_is_refused(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    await db.run_transaction(lambda tx: tx.insert_rows("items", COLUMNS, [(1, "a")]))
    await db.close()
    with pytest.raises(RuntimeError, match="not open"):
        await db.run_transaction(lambda tx: None)


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a per-thread nice value is Linux behaviour")
async def test_the_writer_thread_runs_below_the_event_loop_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    try:
        before = _nice()
        writer = await db.run_transaction(lambda tx: _nice())
        assert writer == min(before + WRITER_NICE_INCREMENT, 19)
        assert _nice() == before  # the event loop's thread keeps its priority
    finally:
        await db.close()


async def test_the_writer_keeps_temporary_files_in_memory(tmp_path: Path) -> None:
    """Otherwise a multi-row INSERT's statement journal over 64 KiB becomes a file in /var/tmp."""
    db = await _open(tmp_path)
    try:
        setting = await db.run_transaction(lambda tx: tx.fetch_one("PRAGMA temp_store"))
        assert setting == {"temp_store": 2}  # MEMORY
    finally:
        await db.close()
