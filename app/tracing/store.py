"""The trace repository: tables ``traces``, ``trace_steps`` and ``trace_ledger`` (SQL lives here)."""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from typing import Any

from app.db.connection import Database, PostgresDatabase, Row, SqliteDatabase, SqliteTransaction
from app.db.migrations import Migration, migrate
from app.ids import time_uuid_ceiling
from app.tracing.chain import GENESIS, ledger_canonical, link

COMPONENT = "traces"
_CLOCK_AHEAD_NS = 86_400 * 10**9  # trace ids a replica with a clock up to a day ahead made still count as newest

MIGRATIONS = (
    Migration(
        1,
        "traces, steps and ledger",
        sqlite=(
            # WITHOUT ROWID: keyed by its (time-ordered) id alone, one B-tree per insert instead of two.
            "CREATE TABLE IF NOT EXISTS traces (id TEXT PRIMARY KEY, created_at TEXT NOT NULL,"
            " metadata_json TEXT NOT NULL, principal TEXT, request_id TEXT, finished_at TEXT,"
            " step_count INTEGER, head_hash TEXT, ledger_seq INTEGER) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS trace_steps (id INTEGER PRIMARY KEY AUTOINCREMENT, trace_id TEXT NOT NULL,"
            " seq INTEGER NOT NULL, step_type TEXT NOT NULL, step_json TEXT NOT NULL, created_at TEXT NOT NULL,"
            " prev_hash TEXT NOT NULL, step_hash TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS trace_steps_by_trace ON trace_steps (trace_id, seq)",
            "CREATE TABLE IF NOT EXISTS trace_ledger (seq INTEGER PRIMARY KEY, trace_id TEXT NOT NULL,"
            " head_hash TEXT NOT NULL, step_count INTEGER NOT NULL, created_at TEXT NOT NULL,"
            " prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS trace_ledger_by_trace ON trace_ledger (trace_id)",
        ),
        postgres=(
            "CREATE TABLE IF NOT EXISTS traces (id TEXT PRIMARY KEY, created_at TEXT NOT NULL,"
            " metadata_json TEXT NOT NULL, principal TEXT, request_id TEXT, finished_at TEXT,"
            " step_count INTEGER, head_hash TEXT, ledger_seq BIGINT)",
            "CREATE TABLE IF NOT EXISTS trace_steps (id BIGSERIAL PRIMARY KEY, trace_id TEXT NOT NULL,"
            " seq INTEGER NOT NULL, step_type TEXT NOT NULL, step_json TEXT NOT NULL, created_at TEXT NOT NULL,"
            " prev_hash TEXT NOT NULL, step_hash TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS trace_steps_by_trace ON trace_steps (trace_id, seq)",
            "CREATE TABLE IF NOT EXISTS trace_ledger (seq BIGINT PRIMARY KEY, trace_id TEXT NOT NULL,"
            " head_hash TEXT NOT NULL, step_count INTEGER NOT NULL, created_at TEXT NOT NULL,"
            " prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS trace_ledger_by_trace ON trace_ledger (trace_id)",
        ),
    ),
)


# The writer's rows are plain tuples (it builds one per step of every request: a NamedTuple's
# constructor costs several times a tuple display).
Finish = tuple[str, int, str, str]
"""A trace that ended: (trace_id, step_count, head_hash, finished_at)."""
TraceRow = tuple[str, str, str | None, str | None, Finish | None]
"""A new trace: (id, created_at, principal, request_id, its Finish if it also ended)."""
StepRow = tuple[str, int, str, str, str, str, str]
"""A ``trace_steps`` row in the order of :data:`STEP_COLUMNS`."""

STEP_COLUMNS = ("trace_id", "seq", "step_type", "step_json", "created_at", "prev_hash", "step_hash")
_TRACE_COLUMNS = (
    "id",
    "created_at",
    "metadata_json",
    "principal",
    "request_id",
    "finished_at",
    "step_count",
    "head_hash",
    "ledger_seq",
)
_NOT_ENDED = (None, None, None, None)  # finished_at, step_count, head_hash, ledger_seq
# metadata_json is no longer written: a trace's request fields are its request step's payload
# (hashed with the chain). Traces written by earlier versions keep their copy.
_NO_METADATA = ""
_LEDGER_COLUMNS = ("seq", "trace_id", "head_hash", "step_count", "created_at", "prev_hash", "entry_hash")


_OF_PRINCIPAL = "EXISTS (SELECT 1 FROM traces WHERE traces.id = trace_steps.trace_id AND traces.principal = ${})"
_LEDGER_HEAD = "SELECT seq, entry_hash FROM trace_ledger ORDER BY seq DESC LIMIT 1"
_FINISH_LATER = "UPDATE traces SET finished_at = $1, step_count = $2, head_hash = $3, ledger_seq = $4 WHERE id = $5"


class _Batch:
    """The rows of one batch: ledger entries chained onto the current ledger head (read inside the
    transaction, so that writers in several processes append in turn)."""

    def __init__(
        self, head: Row | None, traces: Sequence[TraceRow], steps: Sequence[StepRow], finishes: Sequence[Finish]
    ) -> None:
        self.traces, self.steps = traces, steps
        ledger: dict[str, tuple[Any, ...]] = {}
        seq, prev = (int(head["seq"]), str(head["entry_hash"])) if head else (0, GENESIS)
        for trace_id, step_count, head_hash, finished_at in finishes:
            seq += 1
            text = ledger_canonical(seq, trace_id, head_hash, step_count, finished_at, plain=True)
            entry_hash = link(prev, text)
            ledger[trace_id] = (seq, trace_id, head_hash, step_count, finished_at, prev, entry_hash)
            prev = entry_hash
        self.ledger = ledger
        # A trace whose row this batch inserts already finished needs no UPDATE. Every other finish
        # does: a trace begun in an earlier batch, and one whose first hand-over (a stream's early
        # flush) and its end both fall in this batch, whose row goes in as not yet finished.
        inserted_finished = {trace[0] for trace in traces if trace[4] is not None}
        self.finished_later = [
            (f[3], f[1], f[2], ledger[f[0]][0], f[0]) for f in finishes if f[0] not in inserted_finished
        ]

    def inserts(self) -> list[tuple[str, Sequence[str], Sequence[Sequence[Any]]]]:
        ledger = self.ledger
        rows = []
        for trace_id, created_at, principal, request_id, finish in self.traces:
            ended = (finish[3], finish[1], finish[2], ledger[trace_id][0]) if finish else _NOT_ENDED
            rows.append((trace_id, created_at, _NO_METADATA, principal, request_id, *ended))
        inserts = (
            ("traces", _TRACE_COLUMNS, rows),
            ("trace_steps", STEP_COLUMNS, self.steps),
            ("trace_ledger", _LEDGER_COLUMNS, list(ledger.values())),
        )
        return [insert for insert in inserts if insert[2]]


def _write_sqlite(
    tx: SqliteTransaction, traces: Sequence[TraceRow], steps: Sequence[StepRow], finishes: Sequence[Finish]
) -> Generator[None, None, None]:
    """The batch's statements, yielding between them (see SqliteDatabase.run_transaction)."""
    batch = _Batch(tx.fetch_one(_LEDGER_HEAD) if finishes else None, traces, steps, finishes)
    for table, columns, rows in batch.inserts():
        yield from tx.insert_rows(table, columns, rows)
    if batch.finished_later:
        tx.executemany(_FINISH_LATER, batch.finished_later)


class TraceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def migrate(self) -> None:
        await migrate(self.db, COMPONENT, MIGRATIONS)

    async def write_batch(
        self, traces: Sequence[TraceRow], steps: Sequence[StepRow], finishes: Sequence[Finish]
    ) -> None:
        """One transaction: new traces, their steps, and the ledger entries of finished traces."""
        if isinstance(self.db, SqliteDatabase):
            # On the loop, a statement at a time, on the bulk writer's own connection.
            await self.db.run_transaction(lambda tx: _write_sqlite(tx, traces, steps, finishes))
            return
        # Off the request path, so it always tries, even right after a call timed out.
        db = self.db
        async with db.transaction(probe=True) if isinstance(db, PostgresDatabase) else db.transaction() as tx:
            head = None
            if finishes:
                # Replicas append to one ledger: serialise appends (released at commit).
                await tx.execute("SELECT pg_advisory_xact_lock(7411720113)")
                head = await tx.fetch_one(_LEDGER_HEAD)
            batch = _Batch(head, traces, steps, finishes)
            for table, columns, rows in batch.inserts():
                await tx.insert_rows(table, columns, rows)
            if batch.finished_later:
                await tx.executemany(_FINISH_LATER, batch.finished_later)

    async def trace(self, trace_id: str) -> Row | None:
        return await self.db.fetch_one("SELECT * FROM traces WHERE id = $1", trace_id)

    async def steps(self, trace_id: str) -> list[Row]:
        return await self.db.fetch_all(
            "SELECT seq, step_type, step_json, created_at, prev_hash, step_hash FROM trace_steps"
            " WHERE trace_id = $1 ORDER BY seq, id",
            trace_id,
        )

    async def ledger_entry(self, trace_id: str) -> Row | None:
        return await self.db.fetch_one("SELECT * FROM trace_ledger WHERE trace_id = $1 ORDER BY seq LIMIT 1", trace_id)

    async def ledger_range(self, first: int, last: int) -> list[Row]:
        return await self.db.fetch_all(
            "SELECT * FROM trace_ledger WHERE seq >= $1 AND seq <= $2 ORDER BY seq", first, last
        )

    async def ledger_entry_at(self, seq: int) -> Row | None:
        return await self.db.fetch_one("SELECT * FROM trace_ledger WHERE seq = $1", seq)

    async def ledger_head(self) -> Row | None:
        return await self.db.fetch_one("SELECT * FROM trace_ledger ORDER BY seq DESC LIMIT 1")

    async def newest_recorded_ledger_seq(self, window: int) -> int | None:
        """The highest ledger entry recorded by the newest ``window`` traces (ids are time-ordered),
        a bounded read however large the table.

        Versions before 6c4b682 gave traces random (version 4) ids, and most of those sort after
        every time-ordered id: on a database such a version wrote, the highest ids would be old
        traces for good. Ids past the present (plus a day for clocks ahead) are left out."""
        ceiling = time_uuid_ceiling(time.time_ns() + _CLOCK_AHEAD_NS)
        row = await self.db.fetch_one(
            "SELECT MAX(ledger_seq) AS seq FROM"
            " (SELECT ledger_seq FROM traces WHERE id <= $1 ORDER BY id DESC LIMIT $2) recent",
            ceiling,
            window,
        )
        return int(row["seq"]) if row and row["seq"] is not None else None

    async def traces_exist(self, trace_ids: Sequence[str]) -> set[str]:
        if not trace_ids:
            return set()
        marks = ", ".join(f"${i}" for i in range(1, len(trace_ids) + 1))
        rows = await self.db.fetch_all(f"SELECT id FROM traces WHERE id IN ({marks})", *trace_ids)  # noqa: S608
        return {row["id"] for row in rows}

    async def events(
        self, *, limit: int, step_types: Sequence[str], trace_id: str | None, principal: str | None = None
    ) -> list[Row]:
        """Recent steps, newest first (by insertion order, which never ties); with ``principal``,
        only the steps of that principal's traces."""
        clauses: list[str] = []
        args: list[Any] = []
        if principal is not None:
            args.append(principal)
            # Correlated (one primary-key lookup per step, newest first) so that the LIMIT stops the scan.
            clauses.append(_OF_PRINCIPAL.format(len(args)))
        if trace_id is not None:
            args.append(trace_id)
            clauses.append(f"trace_id = ${len(args)}")
        if step_types:
            marks = []
            for step_type in step_types:
                args.append(step_type)
                marks.append(f"${len(args)}")
            clauses.append(f"step_type IN ({', '.join(marks)})")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        args.append(limit)
        # Only generated placeholders ($n) are interpolated; every value is a bound parameter.
        sql = f"SELECT trace_id, seq, step_type, step_json, created_at, prev_hash, step_hash FROM trace_steps {where}"  # noqa: S608
        return await self.db.fetch_all(f"{sql} ORDER BY id DESC LIMIT ${len(args)}", *args)

    async def count_steps(self) -> int:
        row = await self.db.fetch_one("SELECT COUNT(*) AS n FROM trace_steps")
        return int(row["n"]) if row else 0
