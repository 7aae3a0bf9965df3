"""Receipt retention: old traces lose their steps; the log keeps their ledger entries.

With ``ORCH_TRACE_RETENTION_DAYS`` and/or ``ORCH_TRACE_RETENTION_MAX_MB`` set, a background job
prunes the oldest finished traces, in ledger order, a small batch per transaction: it deletes
their steps and trace records, and in the same transaction records each one in
``trace_pruned`` (and the batch, a ledger range, in ``trace_prunes``). Their ledger entries (the
Merkle tree's leaves), the tree nodes and the signed checkpoints are never touched, so every
retained receipt still proves its inclusion, every checkpoint stays consistent with the later
ones, and a pruned trace still proves that it was logged. Verification says ``pruned`` (with the
date) for such a trace instead of ``trace_deleted``.

Each batch's marks are signed (a C2SP note with the checkpoints' key, :func:`prune_body`), so a
mark written or edited by someone without the key verifies as ``prune_mismatch``. What a
``pruned`` verdict proves, then: that the key holder's job found the trace intact and deleted its
steps by policy; what holds whoever wrote the database is the ledger entry and its inclusion
under a signed checkpoint (the head hash and step count the trace had). The archive
(``ORCH_TRACE_ARCHIVE_DIR``), written and synced before the delete, is what keeps the steps
checkable: each file is an ``orchestrators.archive.v1`` bundle that ``scripts/verify_receipts.py``
checks offline.

Before pruning a trace the job verifies it as ``GET /v1/trust/verify`` would; one that did not
verify (or was already gone) is recorded with that verdict, which verification keeps reporting.

SQLite: the batch runs on the receipts writer's own connection, one statement at a time on the
event loop (as the writer's batches do, and taking turns with them), and freed pages are handed
back to the file system with ``PRAGMA incremental_vacuum`` in small transactions afterwards
(databases created with retention on are ``auto_vacuum = INCREMENTAL``; see :func:`prepare`).
Postgres: batched DELETEs; reclaiming the space is autovacuum's job.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import sqlite3
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from app.db.connection import Database, Row, SqliteDatabase, SqliteTransaction, serialise
from app.db.migrations import Migration, migrate
from app.observability.logging import get_logger
from app.observability.metrics import Metrics
from app.receipts.chain import Verdict, canonical, verify_ledger, verify_record
from app.receipts.notes import NoteError, Signer, Verifier, open_note, split_note
from app.tasks import cancel_and_wait

log = get_logger("tracing")

COMPONENT = "trace_retention"
MIGRATIONS = (
    Migration(
        1,
        "pruned traces",
        # One row per batch (the ledger range it covered, ``last_seq`` its key), and one per pruned
        # trace, keyed by its ledger entry (which has the trace id, head and finish time): what
        # remains of it besides that entry is its principal (receipts are scoped by it) and its
        # verdict when it was pruned (``state``). A few dozen bytes a trace.
        sqlite=(
            "CREATE TABLE IF NOT EXISTS trace_pruned (ledger_seq INTEGER PRIMARY KEY, principal TEXT,"
            " batch INTEGER NOT NULL, state TEXT NOT NULL) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS trace_prunes (last_seq INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL,"
            " traces INTEGER NOT NULL, reason TEXT NOT NULL, pruned_at TEXT NOT NULL, archive TEXT, note TEXT)",
        ),
        postgres=(
            "CREATE TABLE IF NOT EXISTS trace_pruned (ledger_seq BIGINT PRIMARY KEY, principal TEXT,"
            " batch BIGINT NOT NULL, state TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS trace_prunes (last_seq BIGINT PRIMARY KEY, first_seq BIGINT NOT NULL,"
            " traces INTEGER NOT NULL, reason TEXT NOT NULL, pruned_at TEXT NOT NULL, archive TEXT, note TEXT)",
        ),
    ),
)

ARCHIVE_FORMAT = "orchestrators.archive.v1"
# The archive holds the bundles GET /v1/trust/trace/{id}/export and GET /v1/trust/ledger gave
# when it was written (these formats), so that the offline verifier of that time checks them.
TRACE_BUNDLE = "orchestrators.receipt.v1"
LEDGER_BUNDLE = "orchestrators.ledger.v1"

BATCH_TRACES = 200  # traces per transaction: a few milliseconds of statements
STATEMENT_IDS = 50  # trace ids per DELETE statement (the loop is served between two statements)
BATCH_PAUSE_S = 0.005  # between two batches: requests and the receipts writer go first
VACUUM_PAGES = 128  # pages handed back per transaction (half a megabyte of 4 KiB pages)
VACUUM_STEP_PAGES = 16  # pages freed between two yields to the loop
WAL_TRUNCATE_WAIT_S = 0.2  # a truncating checkpoint waits this long for other connections, then gives up
SIZE_SAMPLE = 200  # newest retained traces whose stored size estimates the size of all of them
# Stored bytes beside a step's text (its row header, hashes' index entry, the B-tree's slack) and
# per trace (its record and ledger row): measured against the file's growth (docs/receipts.md).
STEP_ROW_OVERHEAD = 375
TRACE_ROW_OVERHEAD = 610
MB = 1024 * 1024

_WATERMARK = "SELECT MAX(last_seq) AS seq FROM trace_prunes"
_PRUNED_COLUMNS = ("ledger_seq", "principal", "batch", "state")
_PRUNES_COLUMNS = ("last_seq", "first_seq", "traces", "reason", "pruned_at", "archive", "note")
PRUNE_NOTE = "orchestrators.receipt-prune.v1"  # the first line of a batch's signed note


def _marks(count: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


def marks_digest(marks: Sequence[tuple[int, str | None, str]]) -> str:
    """SHA-256 (hex) of a batch's marks: the canonical JSON of ``[[ledger_seq, principal, state], ...]``
    in ledger order."""
    rows = sorted([int(seq), principal, state] for seq, principal, state in marks)
    return hashlib.sha256(canonical(rows).encode("utf-8")).hexdigest()


def prune_body(origin: str, first: int, last: int, pruned_at: str, digest: str) -> str:
    """The text of a batch's signed note (C2SP signed-note, with the checkpoints' key)."""
    return f"{PRUNE_NOTE}\n{origin}\nrange {first} {last}\npruned_at {pruned_at}\nmarks {digest}\n"


async def migrate_retention(db: Database) -> None:
    await migrate(db, COMPONENT, MIGRATIONS)


async def prepare(db: Database, *, retention_on: bool) -> None:
    """Before the receipt tables exist: a new SQLite file gets ``auto_vacuum = INCREMENTAL`` when
    retention is on, so that pruned pages can be handed back to the file system.

    The mode can only be chosen for an empty file (or by a VACUUM, which rewrites the whole
    file while holding every writer off). An existing database without it keeps working: the
    pages pruning frees are reused by new receipts, so the file stops growing, and it shrinks
    after an offline ``VACUUM`` (docs/operations.md)."""
    if not isinstance(db, SqliteDatabase) or not retention_on:
        return
    tables = await db.fetch_one("SELECT COUNT(*) AS n FROM sqlite_master")
    if tables is not None and int(tables["n"]) == 0:
        # The file is already in WAL mode, where the change needs a VACUUM (instant when empty).
        try:
            await db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            await db.execute("VACUUM")
        except sqlite3.OperationalError as exc:  # another worker holds the new file: it still works
            log.warning("incremental vacuum not set on the new receipt database: %s", exc)
        return
    mode = await db.fetch_one("PRAGMA auto_vacuum")
    if mode is not None and int(mode["auto_vacuum"]) != 2:
        log.warning(
            "the receipt database was created without incremental vacuum: pruned pages are reused but the file"
            " does not shrink until an offline VACUUM (docs/operations.md, Retention)",
            extra={"database": db.path.name},
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """A ledger entry whose trace is to be pruned, with what the database still has of it."""

    entry: Row
    trace: Row | None
    steps: list[Row]
    state: str  # the trace's verdict before pruning ("intact" or what is wrong)


def _verdict(entry: Row, trace: Row | None, steps: list[Row]) -> Verdict:
    """The trace's verdict as GET /v1/trust/verify gives it for an unpruned trace."""
    return verify_record(str(entry["trace_id"]), trace, steps, entry)


def _request_payload(steps: Sequence[Row]) -> Any:
    for step in steps:
        if step["step_type"] == "request":
            return orjson.loads(step["step_json"]).get("payload")
    return None


def _plain(row: Row) -> dict[str, Any]:
    """A row as JSON-ready values (Postgres hands back ints as ints, but be explicit)."""
    return {key: value for key, value in row.items() if key != "id"}


def trace_bundle(candidate: Candidate, exported_at: str) -> dict[str, Any]:
    """The trace as GET /v1/trust/trace/{id}/export gave it (``orchestrators.receipt.v1``)."""
    trace = candidate.trace or {}
    metadata = _request_payload(candidate.steps)
    if metadata is None and trace.get("metadata_json"):
        metadata = orjson.loads(trace["metadata_json"])
    return {
        "format": TRACE_BUNDLE,
        "exported_at": exported_at,
        "trace": {
            "id": candidate.entry["trace_id"],
            "created_at": trace.get("created_at"),
            "finished_at": trace.get("finished_at"),
            "step_count": trace.get("step_count"),
            "head_hash": trace.get("head_hash"),
            "metadata": metadata,
        },
        "steps": [_plain(step) for step in candidate.steps],
        "ledger_entry": _plain(candidate.entry),
    }


def archive_bundle(
    batch: Sequence[Candidate], *, reason: str, archived_at: str, checkpoint: Row | None
) -> dict[str, Any]:
    """A batch as one file: the ledger range bundle, every trace's bundle, and the traces the
    database had already lost (listed, not hidden)."""
    first, last = int(batch[0].entry["seq"]), int(batch[-1].entry["seq"])
    kept = [c for c in batch if c.trace is not None or c.steps]
    return {
        "format": ARCHIVE_FORMAT,
        "archived_at": archived_at,
        "reason": reason,
        "first_seq": first,
        "last_seq": last,
        "ledger": {
            "format": LEDGER_BUNDLE,
            "exported_at": archived_at,
            "first_seq": first,
            "last_seq": last,
            "entries": [_plain(c.entry) for c in batch],
        },
        "traces": [trace_bundle(c, archived_at) for c in kept],
        "missing": [
            {"trace_id": c.entry["trace_id"], "ledger_seq": int(c.entry["seq"]), "state": c.state}
            for c in batch
            if c.trace is None and not c.steps
        ],
        # The newest signed checkpoint when the archive was written: its tree holds these entries
        # (GET /v1/trust/proof/inclusion proves each one against it, before and after pruning).
        "checkpoint": (
            {
                "tree_size": int(checkpoint["tree_size"]),
                "root_hash": checkpoint["root_hash"],
                "note": checkpoint["note"],
            }
            if checkpoint
            else None
        ),
    }


def _write_file(path: Path, data: bytes) -> None:
    """Written to a temporary name, synced, then renamed: a file under its final name is whole.
    The temporary name is the process's own: workers that archive the same batch at once (one of
    them then finds it pruned) each rename a whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class PruneLog:
    """Reads of what the retention job recorded (for verification and the trust routes)."""

    def __init__(self, db: Database, *, verifier: Verifier | None = None) -> None:
        self.db = db
        self.verifier = verifier

    async def record(self, trace_id: str) -> Row | None:
        """What the job recorded of a pruned trace, with its ledger entry's fields, the date and
        its batch's signed note."""
        return await self.db.fetch_one(
            "SELECT p.ledger_seq, p.principal, p.state, b.pruned_at, b.first_seq, b.last_seq, b.note, l.trace_id,"
            " l.head_hash, l.step_count, l.created_at FROM trace_ledger l JOIN trace_pruned p ON p.ledger_seq = l.seq"
            " JOIN trace_prunes b ON b.last_seq = p.batch WHERE l.trace_id = $1 ORDER BY l.seq LIMIT 1",
            trace_id,
        )

    def check_batch(self, batch: Row, marks: Sequence[Row]) -> str:
        """Whether a batch's marks are the ones its note signed: ``verified`` (signed with this
        service's key), ``other_key`` (a well-formed note whose marks match, signed by another key:
        one rotated out, checkable with that key's verifier), or ``mismatch`` (no note, a note of
        other marks or range, or a bad signature by this key: the marks were not written so by the
        retention job)."""
        note = batch.get("note")
        first, last = int(batch["first_seq"]), int(batch["last_seq"])
        if not note or len(marks) != last - first + 1:
            return "mismatch"
        try:
            text, signatures = split_note(note)
        except NoteError:
            return "mismatch"
        lines = text.split("\n")
        digest = marks_digest([(int(m["ledger_seq"]), m["principal"], m["state"]) for m in marks])
        expected = [PRUNE_NOTE, lines[1] if len(lines) > 1 else "", f"range {first} {last}"]
        expected += [f"pruned_at {batch['pruned_at']}", f"marks {digest}", ""]
        if lines != expected:
            return "mismatch"
        verifier = self.verifier
        if verifier is None or all(sig.key_id != verifier.key_id for sig in signatures):
            return "other_key"
        try:
            open_note(note, verifier)
        except NoteError:
            return "mismatch"
        return "verified"

    async def _marks(self, first: int, last: int) -> list[Row]:
        return await self.db.fetch_all(
            "SELECT ledger_seq, principal, batch, state FROM trace_pruned WHERE ledger_seq >= $1 AND ledger_seq <= $2"
            " ORDER BY ledger_seq",
            first,
            last,
        )

    async def as_trace(self, trace_id: str) -> Row | None:
        """A pruned trace's remaining record in the shape of a ``traces`` row, marked with
        ``pruned_at`` (and ``pruned_state``), or None. Its time is its ledger entry's, the finish."""
        row = await self.record(trace_id)
        if row is None:
            return None
        return {
            "id": row["trace_id"],
            "created_at": None,
            "metadata_json": "",
            "principal": row["principal"],
            "request_id": None,
            "finished_at": row["created_at"],
            "step_count": row["step_count"],
            "head_hash": row["head_hash"],
            "ledger_seq": row["ledger_seq"],
            "pruned_at": row["pruned_at"],
            "pruned_state": row["state"],
            "prune_signature": self.check_batch(row, await self._marks(int(row["first_seq"]), int(row["last_seq"]))),
            "prune_note": row["note"],
        }

    async def intact(self, first: int, last: int) -> set[str]:
        """The traces of ledger entries ``first`` to ``last`` that were intact when pruned, in
        batches whose marks their signed notes vouch for."""
        batches = await self.db.fetch_all(
            "SELECT * FROM trace_prunes WHERE last_seq >= $1 AND first_seq <= $2 ORDER BY last_seq", first, last
        )
        if not batches:
            return set()
        lowest, highest = int(batches[0]["first_seq"]), int(batches[-1]["last_seq"])
        marks: dict[int, list[Row]] = {}
        for mark in await self._marks(lowest, highest):
            marks.setdefault(int(mark["batch"]), []).append(mark)
        vouched = {
            int(mark["ledger_seq"])
            for batch in batches
            if self.check_batch(batch, marks.get(int(batch["last_seq"]), [])) != "mismatch"
            for mark in marks.get(int(batch["last_seq"]), [])
            if mark["state"] == "intact"
        }
        rows = await self.db.fetch_all(
            "SELECT seq, trace_id FROM trace_ledger WHERE seq >= $1 AND seq <= $2",
            max(first, lowest),
            min(last, highest),
        )
        return {row["trace_id"] for row in rows if int(row["seq"]) in vouched}

    async def watermark(self) -> int:
        """The last ledger entry whose trace was pruned (0: none)."""
        row = await self.db.fetch_one(_WATERMARK)
        return int(row["seq"]) if row and row["seq"] is not None else 0


def pruned_verdict(trace: Row, steps: Sequence[Row], entry: Row | None) -> Verdict:
    """The verdict of a trace the retention job pruned (``trace`` from :meth:`PruneLog.as_trace`)."""
    pruned_at, state = trace["pruned_at"], trace["pruned_state"]
    head, count = trace["head_hash"], int(trace["step_count"])
    if trace["prune_signature"] == "mismatch":
        return Verdict(
            False,
            "prune_mismatch",
            None,
            len(steps),
            None,
            "the trace is marked pruned, but its batch's signed note does not vouch for the mark: it was not"
            " written so by the retention job (the trace was deleted, or the mark edited)",
        )
    if state != "intact":
        return Verdict(
            False, state, None, len(steps), None, f"the receipt was already {state} when it was pruned on {pruned_at}"
        )
    if entry is None:
        return Verdict(False, "ledger_missing", head, count, None, "the pruned trace's ledger entry is gone")
    if not verify_ledger([entry]).ok:
        return Verdict(False, "ledger_mismatch", head, count, None, "the ledger entry does not match its hash")
    return Verdict(
        False,
        "pruned",
        head,
        count,
        None,
        f"the steps were deleted by the retention policy on {pruned_at}; ledger entry {entry['seq']} remains"
        " (its inclusion proof: /v1/trust/proof/inclusion)",
    )


@dataclass(slots=True)
class PruneResult:
    traces: int = 0
    batches: int = 0
    pages_freed: int = 0
    archives: list[str] | None = None


class RetentionJob:
    """Prunes receipts past the retention policy, in the background (see the module docstring).

    ``clock`` gives the time retention is measured against (tests move it instead of waiting)."""

    def __init__(
        self,
        db: Database,
        *,
        days: float,
        max_mb: float,
        interval: float,
        archive_dir: Path | None,
        metrics: Metrics,
        signer: Signer | None = None,
        origin: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.signer = signer
        self.origin = origin or (signer.name if signer else "")
        self.days = days
        self.max_bytes = max_mb * MB
        self.interval = interval
        self.archive_dir = archive_dir
        self.clock = clock
        self.log = PruneLog(db)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.pruned_total = metrics.counter(
            "orch_trace_pruned_total", "Receipts whose steps the retention policy deleted.", ("reason",)
        )

    @property
    def enabled(self) -> bool:
        return self.days > 0 or self.max_bytes > 0

    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="receipt-retention")

    async def stop(self) -> None:
        """Stop between statements: a batch under way rolls back and is pruned next time."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database outage or a full archive disk: next round
                log.warning("receipt retention round failed: %s", type(exc).__name__)

    # --- what to prune ---------------------------------------------------------------------
    async def _over_size(self, watermark: int) -> int:
        """How many of the oldest retained traces to prune to fit the size cap (an estimate from
        the newest traces' stored size: the same on SQLite and Postgres, whatever either has yet
        handed back to the file system)."""
        if self.max_bytes <= 0:
            return 0
        top_row = await self.db.fetch_one("SELECT MAX(seq) AS seq FROM trace_ledger")
        top = int(top_row["seq"]) if top_row and top_row["seq"] is not None else 0
        retained = top - watermark
        if retained <= 0:
            return 0
        sample = await self.db.fetch_one(
            "SELECT COUNT(*) AS steps, COALESCE(SUM(LENGTH(step_json)), 0) AS chars FROM trace_steps WHERE trace_id IN"
            " (SELECT trace_id FROM trace_ledger WHERE seq > $1 ORDER BY seq DESC LIMIT $2)",
            watermark,
            SIZE_SAMPLE,
        )
        sampled = min(retained, SIZE_SAMPLE)
        steps, chars = (int(sample["steps"]), int(sample["chars"])) if sample else (0, 0)
        per_trace = (chars + steps * STEP_ROW_OVERHEAD) / sampled + TRACE_ROW_OVERHEAD
        excess = retained * per_trace - self.max_bytes
        return min(retained, math.ceil(excess / per_trace)) if excess > 0 else 0

    async def _next_batch(self, watermark: int, by_size: int) -> tuple[list[Row], str]:
        rows = await self.db.fetch_all(
            "SELECT * FROM trace_ledger WHERE seq > $1 ORDER BY seq LIMIT $2", watermark, BATCH_TRACES
        )
        old = 0
        if self.days > 0:
            # The ledger's times are ISO-8601 UTC with microseconds, so they compare as strings.
            at = datetime.fromtimestamp(self.clock() - self.days * 86_400, UTC)
            cutoff = at.isoformat(timespec="microseconds")
            while old < len(rows) and str(rows[old]["created_at"]) < cutoff:
                old += 1
        count = max(old, min(by_size, len(rows)))
        # Only a contiguous run of the ledger: the pruned part is always a prefix of it.
        expected = watermark + 1
        for index, row in enumerate(rows[:count]):
            if int(row["seq"]) != expected + index:
                count = index
                break
        return rows[:count], ("age" if old >= count else "size")

    async def _candidates(self, entries: list[Row]) -> list[Candidate]:
        ids = [str(e["trace_id"]) for e in entries]
        # Only generated placeholders are interpolated; every value is a bound parameter.
        among = f"IN ({_marks(len(ids))})"
        traces = {row["id"]: row for row in await self.db.fetch_all(f"SELECT * FROM traces WHERE id {among}", *ids)}  # noqa: S608
        columns = "trace_id, seq, step_type, step_json, created_at, prev_hash, step_hash"
        select_steps = f"SELECT {columns} FROM trace_steps WHERE trace_id {among} ORDER BY trace_id, seq, id"  # noqa: S608
        steps: dict[str, list[Row]] = {}
        for row in await self.db.fetch_all(select_steps, *ids):
            steps.setdefault(row.pop("trace_id"), []).append(row)
        batch = []
        for entry in entries:
            trace_id = str(entry["trace_id"])
            trace, own = traces.get(trace_id), steps.get(trace_id, [])
            batch.append(Candidate(entry, trace, own, _verdict(entry, trace, own).reason))
        return batch

    # --- pruning ---------------------------------------------------------------------------
    async def run_once(self) -> PruneResult:
        """Prune everything past the policy now, batch by batch; then hand freed pages back."""
        result = PruneResult(archives=[])
        if not self.enabled:
            return result
        async with self._lock:
            while True:
                watermark = await self.log.watermark()
                entries, reason = await self._next_batch(watermark, await self._over_size(watermark))
                if not entries:
                    break
                pruned = await self._prune(await self._candidates(entries), reason, watermark, result)
                if not pruned:
                    break
                await asyncio.sleep(BATCH_PAUSE_S)
            result.pages_freed = await self._vacuum()
        if result.traces:
            log.info(
                "receipts pruned by the retention policy",
                extra={"traces": result.traces, "batches": result.batches, "pages_freed": result.pages_freed},
            )
        return result

    async def _archive(self, batch: list[Candidate], reason: str, pruned_at: str, note: str | None) -> str | None:
        if self.archive_dir is None:
            return None
        checkpoint = await self.db.fetch_one("SELECT * FROM trust_checkpoints ORDER BY tree_size DESC LIMIT 1")
        bundle = archive_bundle(batch, reason=reason, archived_at=pruned_at, checkpoint=checkpoint)
        bundle["prune_note"] = note
        name = f"receipts-{int(batch[0].entry['seq']):012d}-{int(batch[-1].entry['seq']):012d}.json"
        await asyncio.to_thread(_write_file, self.archive_dir / name, orjson.dumps(bundle))
        return name

    async def _prune(self, batch: list[Candidate], reason: str, watermark: int, result: PruneResult) -> int:
        pruned_at = datetime.now(UTC).isoformat()
        first, last = int(batch[0].entry["seq"]), int(batch[-1].entry["seq"])
        marks = [(int(c.entry["seq"]), c.trace.get("principal") if c.trace else None, last, c.state) for c in batch]
        # The batch's marks, signed with the checkpoints' key: whoever can write the database but
        # does not hold the key cannot mark a trace it deleted as pruned.
        body = prune_body(self.origin, first, last, pruned_at, marks_digest([(m[0], m[1], m[3]) for m in marks]))
        note = self.signer.sign(body) if self.signer is not None else None
        # Written (and synced) before anything is deleted; a failure here deletes nothing.
        archive = await self._archive(batch, reason, pruned_at, note)
        run = (last, first, len(batch), reason, pruned_at, archive, note)
        ids = [str(c.entry["trace_id"]) for c in batch]
        if isinstance(self.db, SqliteDatabase):
            done = await self.db.run_transaction(lambda tx: _prune_sqlite(tx, watermark, ids, marks, run))
        else:
            done = await _prune_postgres(self.db, watermark, ids, marks, run)
        if not done:  # another process pruned this range first
            return 0
        result.traces += len(batch)
        result.batches += 1
        if archive and result.archives is not None:
            result.archives.append(archive)
        self.pruned_total.labels(reason).inc(len(batch))
        return len(batch)

    async def _vacuum(self) -> int:
        """SQLite with incremental vacuum: hand the free pages back, a few per transaction."""
        db = self.db
        if not isinstance(db, SqliteDatabase):
            return 0
        mode = await db.fetch_one("PRAGMA auto_vacuum")
        if mode is None or int(mode["auto_vacuum"]) != 2:
            return 0
        freed, before = 0, None
        while True:
            row = await db.fetch_one("PRAGMA freelist_count")
            free = int(row["freelist_count"]) if row else 0
            if free <= 0 or (before is not None and free >= before):  # done, or no longer shrinking
                if freed:
                    await asyncio.to_thread(_truncate_wal, db.path)
                return freed
            pages = min(free, VACUUM_PAGES)
            await db.run_transaction(lambda tx, n=pages: _vacuum_steps(tx, n))  # type: ignore[misc]
            freed, before = freed + pages, free
            await asyncio.sleep(BATCH_PAUSE_S)


def _truncate_wal(path: Path) -> None:
    """Shrink the WAL file back once the pruned pages left the database: moving them wrote the
    WAL up to its largest size, which SQLite otherwise keeps. Best effort: while another
    connection is reading or writing it waits a moment, then leaves it for the next round."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=WAL_TRUNCATE_WAIT_S)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error as exc:
        log.info("the receipt WAL was not truncated: %s", type(exc).__name__)
    finally:
        connection.close()


def _vacuum_steps(tx: SqliteTransaction, pages: int) -> Generator[None, None, None]:
    # Python's sqlite3 runs a pragma statement a single step, and each step of incremental_vacuum
    # hands back one page: one statement per page, yielding to the loop every few.
    for done in range(1, pages + 1):
        tx.fetch_all("PRAGMA incremental_vacuum(1)")
        if done % VACUUM_STEP_PAGES == 0:
            yield


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i : i + STATEMENT_IDS] for i in range(0, len(ids), STATEMENT_IDS)]


def _insert(table: str, columns: Sequence[str]) -> str:
    # Names are this module's constants; every value is a bound parameter.
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({_marks(len(columns))})"  # noqa: S608


def _prune_sqlite(
    tx: SqliteTransaction,
    watermark: int,
    ids: Sequence[str],
    marks: Sequence[tuple[Any, ...]],
    run: tuple[Any, ...],
) -> Generator[None, None, bool]:
    row = tx.fetch_one(_WATERMARK)
    if (int(row["seq"]) if row and row["seq"] is not None else 0) != watermark:
        return False
    for chunk in _chunks(ids):
        marks_sql = _marks(len(chunk))
        tx.executemany(f"DELETE FROM trace_steps WHERE trace_id IN ({marks_sql})", [chunk])  # noqa: S608
        yield
        tx.executemany(f"DELETE FROM traces WHERE id IN ({marks_sql})", [chunk])  # noqa: S608
        yield
    tx.executemany(_insert("trace_pruned", _PRUNED_COLUMNS), marks)
    tx.executemany(_insert("trace_prunes", _PRUNES_COLUMNS), [run])
    return True


async def _prune_postgres(
    db: Database,
    watermark: int,
    ids: Sequence[str],
    marks: Sequence[tuple[Any, ...]],
    run: tuple[Any, ...],
) -> bool:
    async with db.transaction() as tx:
        await serialise(tx, "trace-retention")  # replicas sharing the database prune in turn
        row = await tx.fetch_one(_WATERMARK)
        if (int(row["seq"]) if row and row["seq"] is not None else 0) != watermark:
            return False
        for chunk in _chunks(ids):
            marks_sql = _marks(len(chunk))
            await tx.execute(f"DELETE FROM trace_steps WHERE trace_id IN ({marks_sql})", *chunk)  # noqa: S608
            await tx.execute(f"DELETE FROM traces WHERE id IN ({marks_sql})", *chunk)  # noqa: S608
        await tx.executemany(_insert("trace_pruned", _PRUNED_COLUMNS), marks)
        await tx.executemany(_insert("trace_prunes", _PRUNES_COLUMNS), [run])
    return True
