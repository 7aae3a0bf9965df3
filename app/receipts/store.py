"""The trace repository: tables ``traces``, ``trace_steps`` and ``trace_ledger`` (SQL lives here)."""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from typing import Any

from app.db.connection import Database, PostgresDatabase, Row, SqliteDatabase, SqliteTransaction
from app.db.migrations import Migration, migrate
from app.ids import time_uuid_ceiling
from app.observability.logging import get_logger
from app.receipts.chain import GENESIS, entry_canonical, ledger_canonical, link
from app.receipts.merkle import EMPTY_ROOT, Node, complete_parts, leaf_hash, node_hash, range_hash, root_of

log = get_logger("tracing")

COMPONENT = "traces"
_CLOCK_AHEAD_NS = 86_400 * 10**9  # trace ids a replica with a clock up to a day ahead made still count as newest

# Every key that signed checkpoints here, so that a rotated key's checkpoints stay checkable.
_KEYS_TABLE = (
    "CREATE TABLE IF NOT EXISTS trust_keys (key_id TEXT PRIMARY KEY, verifier_key TEXT NOT NULL,"
    " first_used TEXT NOT NULL)"
)
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
    Migration(
        2,
        "the Merkle tree over the ledger",
        # Hashes of complete, aligned subtrees of TREE_LEVEL levels and up (hex). An existing
        # ledger's nodes are built at startup (TraceStore.build_tree).
        sqlite=(
            "CREATE TABLE IF NOT EXISTS trace_tree (level INTEGER NOT NULL, idx INTEGER NOT NULL,"
            " hash TEXT NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID",
        ),
        postgres=(
            "CREATE TABLE IF NOT EXISTS trace_tree (level INTEGER NOT NULL, idx BIGINT NOT NULL,"
            " hash TEXT NOT NULL, PRIMARY KEY (level, idx))",
        ),
    ),
    Migration(
        3,
        "signed checkpoints of the receipt log",
        sqlite=(
            "CREATE TABLE IF NOT EXISTS trust_checkpoints (tree_size INTEGER PRIMARY KEY, root_hash TEXT NOT NULL,"
            " key_id TEXT NOT NULL, note TEXT NOT NULL, created_at TEXT NOT NULL)",
            _KEYS_TABLE,
        ),
        postgres=(
            "CREATE TABLE IF NOT EXISTS trust_checkpoints (tree_size BIGINT PRIMARY KEY, root_hash TEXT NOT NULL,"
            " key_id TEXT NOT NULL, note TEXT NOT NULL, created_at TEXT NOT NULL)",
            _KEYS_TABLE,
        ),
    ),
    Migration(
        4,
        "ledger entries commit to the trace's principal",
        # NULL in the entries written before (version 1 entries, which verify as written).
        sqlite=("ALTER TABLE trace_ledger ADD COLUMN principal TEXT",),
        postgres=("ALTER TABLE trace_ledger ADD COLUMN IF NOT EXISTS principal TEXT",),
    ),
)

# The tree keeps the hashes of subtrees of 16 leaves and up: one row per 8 ledger entries on
# average. A proof hashes the few leaves below that level from the ledger rows themselves.
TREE_LEVEL = 4
TREE_CHUNK = 1 << TREE_LEVEL
_BUILD_PAGE = 4096  # ledger entries read per round while building the tree of an older database


# The writer's rows are plain tuples (it builds one per step of every request: a NamedTuple's
# constructor costs several times a tuple display).
Finish = tuple[str, int, str, str, str | None]
"""A trace that ended: (trace_id, step_count, head_hash, finished_at, principal)."""
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
_LEDGER_COLUMNS = ("seq", "trace_id", "head_hash", "step_count", "created_at", "prev_hash", "entry_hash", "principal")


_OF_PRINCIPAL = "EXISTS (SELECT 1 FROM traces WHERE traces.id = trace_steps.trace_id AND traces.principal = ${})"
_LEDGER_HEAD = "SELECT seq, entry_hash FROM trace_ledger ORDER BY seq DESC LIMIT 1"
_FINISH_LATER = "UPDATE traces SET finished_at = $1, step_count = $2, head_hash = $3, ledger_seq = $4 WHERE id = $5"
_LEAF_COLUMNS = "seq, trace_id, head_hash, step_count, created_at, principal"
_LEDGER_LEAVES = f"SELECT {_LEAF_COLUMNS} FROM trace_ledger WHERE seq >= $1 AND seq <= $2 ORDER BY seq"  # noqa: S608
# Several replicas (or a replica's writer and another's start-up build) may compute the same node:
# it has one value, so the second write is a no-op.
_INSERT_NODE = "INSERT INTO trace_tree (level, idx, hash) VALUES ($1, $2, $3) ON CONFLICT (level, idx) DO NOTHING"


class TreeIncomplete(Exception):
    """A node or a ledger entry the tree needs is missing (the database was edited)."""


def entry_leaf(row: Row) -> bytes:
    """The Merkle leaf hash of a ledger row: RFC 9162's leaf hash of the entry's canonical text."""
    return leaf_hash(entry_canonical(row).encode("utf-8"))


def _select_nodes(nodes: Sequence[Node]) -> tuple[Any, ...]:
    """The statement and its arguments that read these tree nodes: ``fetch_all(*_select_nodes(...))``."""
    clauses: list[str] = []
    args: list[int] = []
    for level, index in nodes:
        clauses.append(f"(level = ${len(args) + 1} AND idx = ${len(args) + 2})")
        args += [level, index]
    # Only generated placeholders are interpolated; every value is a bound parameter.
    return (f"SELECT level, idx, hash FROM trace_tree WHERE {' OR '.join(clauses)}", *args)  # noqa: S608


class TreeGrowth:
    """The nodes that appending leaves to a tree of ``size`` leaves completes.

    ``reads()`` says what the database must supply (the leaves of the last, incomplete chunk, and
    the complete subtrees along the tree's right edge); ``nodes()`` computes the new rows."""

    def __init__(self, size: int, leaves: Sequence[bytes]) -> None:
        self.size = size
        self.leaves = leaves
        self.base = size - size % TREE_CHUNK  # first leaf of the chunk the new leaves continue

    def needed(self) -> bool:
        return self.size % TREE_CHUNK + len(self.leaves) >= TREE_CHUNK

    def tail_seqs(self) -> tuple[int, int]:
        """Ledger sequence numbers (1-based) of the incomplete chunk's leaves already stored."""
        return self.base + 1, self.size

    def edge(self) -> list[Node]:
        return complete_parts(0, self.base) if self.base else []

    def nodes(self, tail: Sequence[Row], edge: Sequence[Row]) -> list[tuple[int, int, str]]:
        if len(tail) != self.size - self.base:
            raise TreeIncomplete(f"ledger entries {self.base + 1} to {self.size} are not all there")
        known: dict[Node, bytes] = {(int(r["level"]), int(r["idx"])): bytes.fromhex(r["hash"]) for r in edge}
        leaves = [*(entry_leaf(row) for row in tail), *self.leaves]
        new: dict[Node, bytes] = {}
        current = []
        for chunk in range(len(leaves) // TREE_CHUNK):
            index = self.base // TREE_CHUNK + chunk
            new[(TREE_LEVEL, index)] = root_of(leaves[chunk * TREE_CHUNK : (chunk + 1) * TREE_CHUNK])
            current.append(index)
        known.update(new)
        level = TREE_LEVEL
        while current:
            parents = []
            for index in current:
                if index & 1:
                    left = known.get((level, index - 1))
                    if left is None:
                        raise TreeIncomplete(f"tree node ({level}, {index - 1}) is missing")
                    parent = node_hash(left, known[(level, index)])
                    known[(level + 1, index >> 1)] = new[(level + 1, index >> 1)] = parent
                    parents.append(index >> 1)
            current, level = parents, level + 1
        return [(lvl, index, digest.hex()) for (lvl, index), digest in sorted(new.items())]


class _Batch:
    """The rows of one batch: ledger entries chained onto the current ledger head (read inside the
    transaction, so that writers in several processes append in turn)."""

    def __init__(
        self, head: Row | None, traces: Sequence[TraceRow], steps: Sequence[StepRow], finishes: Sequence[Finish]
    ) -> None:
        self.traces, self.steps = traces, steps
        ledger: dict[str, tuple[Any, ...]] = {}
        seq, prev = (int(head["seq"]), str(head["entry_hash"])) if head else (0, GENESIS)
        leaves: list[bytes] = []
        self.growth = TreeGrowth(seq, leaves)
        for trace_id, step_count, head_hash, finished_at, principal in finishes:
            seq += 1
            text = ledger_canonical(seq, trace_id, head_hash, step_count, finished_at, principal=principal, plain=True)
            entry_hash = link(prev, text)
            ledger[trace_id] = (seq, trace_id, head_hash, step_count, finished_at, prev, entry_hash, principal)
            leaves.append(leaf_hash(text.encode("utf-8")))
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
    growth = batch.growth
    if growth.needed():
        edge = growth.edge()
        tail = tx.fetch_all(_LEDGER_LEAVES, *growth.tail_seqs())
        nodes = _grown(growth, tail, tx.fetch_all(*_select_nodes(edge)) if edge else [])
        if nodes:
            tx.executemany(_INSERT_NODE, nodes)


def _grown(growth: TreeGrowth, tail: Sequence[Row], edge: Sequence[Row]) -> list[tuple[int, int, str]]:
    """The new tree nodes, or none when the database lost what the tree needs: the receipts are
    still written (a request never fails for its receipt), and proofs over that part say so."""
    try:
        return growth.nodes(tail, edge)
    except TreeIncomplete as exc:
        log.warning("the receipt tree cannot grow: %s", exc)
        return []


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
            growth = batch.growth
            if growth.needed():
                edge = growth.edge()
                tail = await tx.fetch_all(_LEDGER_LEAVES, *growth.tail_seqs())
                nodes = _grown(growth, tail, await tx.fetch_all(*_select_nodes(edge)) if edge else [])
                if nodes:
                    await tx.executemany(_INSERT_NODE, nodes)

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

    async def tree_size(self) -> int:
        """The number of leaves in the tree: the ledger's entries."""
        row = await self.db.fetch_one("SELECT MAX(seq) AS n FROM trace_ledger")
        return int(row["n"]) if row and row["n"] is not None else 0

    async def tree_nodes(self, nodes: Sequence[Node]) -> dict[Node, bytes]:
        """The hashes of complete, aligned subtrees: stored ones from the tree table, lower ones
        from the ledger rows under them. Raises :class:`TreeIncomplete` when one is missing."""
        result: dict[Node, bytes] = {}
        stored = sorted({node for node in nodes if node[0] >= TREE_LEVEL})
        if stored:
            for row in await self.db.fetch_all(*_select_nodes(stored)):
                result[(int(row["level"]), int(row["idx"]))] = bytes.fromhex(row["hash"])
        low = sorted({node for node in nodes if node[0] < TREE_LEVEL})
        chunks = sorted({(index << level) // TREE_CHUNK for level, index in low})
        leaves: dict[int, bytes] = {}
        for chunk in chunks:
            for row in await self.db.fetch_all(_LEDGER_LEAVES, chunk * TREE_CHUNK + 1, (chunk + 1) * TREE_CHUNK):
                leaves[int(row["seq"]) - 1] = entry_leaf(row)
        for level, index in low:
            first = index << level
            under = [leaves.get(position) for position in range(first, first + (1 << level))]
            if any(leaf is None for leaf in under):
                raise TreeIncomplete(f"ledger entries under tree node ({level}, {index}) are missing")
            result[(level, index)] = root_of([leaf for leaf in under if leaf is not None])
        missing = [node for node in nodes if node not in result]
        if missing:
            raise TreeIncomplete(f"tree node {missing[0]} is missing")
        return result

    async def tree_root(self, size: int) -> bytes:
        """The root hash of the tree of the first ``size`` leaves."""
        if size == 0:
            return EMPTY_ROOT
        nodes = await self.tree_nodes(complete_parts(0, size))
        return range_hash(0, size, nodes.__getitem__)

    async def add_checkpoint(self, tree_size: int, root_hash: str, key_id: str, note: str, created_at: str) -> bool:
        """Store a signed checkpoint; False when one of that size exists (replicas signing the same
        tree sign the same text: the first is kept)."""
        written = await self.db.execute(
            "INSERT INTO trust_checkpoints (tree_size, root_hash, key_id, note, created_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tree_size) DO NOTHING",
            tree_size,
            root_hash,
            key_id,
            note,
            created_at,
        )
        return written > 0

    async def add_key(self, key_id: str, verifier_key: str, first_used: str) -> None:
        await self.db.execute(
            "INSERT INTO trust_keys (key_id, verifier_key, first_used) VALUES ($1, $2, $3)"
            " ON CONFLICT (key_id) DO NOTHING",
            key_id,
            verifier_key,
            first_used,
        )

    async def keys(self) -> list[Row]:
        return await self.db.fetch_all("SELECT * FROM trust_keys ORDER BY first_used")

    async def latest_checkpoint(self) -> Row | None:
        return await self.db.fetch_one("SELECT * FROM trust_checkpoints ORDER BY tree_size DESC LIMIT 1")

    async def checkpoint(self, tree_size: int) -> Row | None:
        return await self.db.fetch_one("SELECT * FROM trust_checkpoints WHERE tree_size = $1", tree_size)

    async def checkpoints(self, since: int, limit: int) -> list[Row]:
        """Checkpoints of trees larger than ``since`` leaves, oldest first."""
        return await self.db.fetch_all(
            "SELECT * FROM trust_checkpoints WHERE tree_size > $1 ORDER BY tree_size LIMIT $2", since, limit
        )

    async def build_tree(self) -> int:
        """Build the tree nodes a ledger written before the tree existed lacks (an upgrade), and
        any a failed batch left out. Returns the number of nodes written."""
        row = await self.db.fetch_one("SELECT MAX(idx) AS idx FROM trace_tree WHERE level = $1", TREE_LEVEL)
        done = (int(row["idx"]) + 1) * TREE_CHUNK if row and row["idx"] is not None else 0
        top = await self.tree_size()
        written = 0
        while top - done >= TREE_CHUNK:
            last = min(top, done + _BUILD_PAGE)
            last -= (last - done) % TREE_CHUNK
            rows = await self.db.fetch_all(_LEDGER_LEAVES, done + 1, last)
            growth = TreeGrowth(done, [entry_leaf(r) for r in rows])
            if len(rows) != last - done:
                raise TreeIncomplete(f"ledger entries {done + 1} to {last} are not all there")
            edge = growth.edge()
            nodes = growth.nodes([], await self.db.fetch_all(*_select_nodes(edge)) if edge else [])
            async with self.db.transaction() as tx:
                await tx.executemany(_INSERT_NODE, nodes)
            written += len(nodes)
            done = last
        return written

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

    async def traces_by_id(self, trace_ids: Sequence[str]) -> dict[str, Row]:
        """The records of these traces (one query; callers keep the list to a few hundred)."""
        if not trace_ids:
            return {}
        marks = ", ".join(f"${i}" for i in range(1, len(trace_ids) + 1))
        rows = await self.db.fetch_all(f"SELECT * FROM traces WHERE id IN ({marks})", *trace_ids)  # noqa: S608
        return {row["id"]: row for row in rows}

    async def steps_by_trace(self, trace_ids: Sequence[str]) -> dict[str, list[Row]]:
        """The steps of these traces, each trace's in order (one query)."""
        if not trace_ids:
            return {}
        marks = ", ".join(f"${i}" for i in range(1, len(trace_ids) + 1))
        rows = await self.db.fetch_all(
            "SELECT trace_id, seq, step_type, step_json, created_at, prev_hash, step_hash FROM trace_steps"  # noqa: S608
            f" WHERE trace_id IN ({marks}) ORDER BY trace_id, seq, id",
            *trace_ids,
        )
        steps: dict[str, list[Row]] = {}
        for row in rows:
            steps.setdefault(row["trace_id"], []).append(row)
        return steps

    async def request_steps(self, trace_ids: Sequence[str]) -> dict[str, list[Row]]:
        """The request steps of these traces (where their principal is hashed)."""
        if not trace_ids:
            return {}
        marks = ", ".join(f"${i}" for i in range(1, len(trace_ids) + 1))
        rows = await self.db.fetch_all(
            "SELECT trace_id, step_type, step_json FROM trace_steps"  # noqa: S608
            f" WHERE trace_id IN ({marks}) AND step_type = 'request' ORDER BY seq, id",
            *trace_ids,
        )
        steps: dict[str, list[Row]] = {}
        for row in rows:
            steps.setdefault(row["trace_id"], []).append(row)
        return steps

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
