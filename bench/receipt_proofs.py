"""Receipt log proofs at scale, in process: a ledger of N entries (1,000,000 by default) on
SQLite (and Postgres with --postgres URL), its tree built as an upgrade would build it, then
random inclusion and consistency proofs as the trust routes compute them.

    python bench/receipt_proofs.py [WORKDIR] [--leaves N] [--postgres URL]

Prints the build time and the p50/p99 of a proof (reads plus hashing). Each proof is checked
with the RFC 9162 verifier before it counts.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.db.connection import Database, PostgresDatabase, SqliteDatabase
from app.receipts.chain import GENESIS, ledger_canonical
from app.receipts.merkle import (
    complete_parts,
    consistency_ranges,
    inclusion_ranges,
    range_hash,
    verify_consistency,
    verify_inclusion,
)
from app.receipts.store import TraceStore, entry_leaf

PROOFS = 1000
INSERT_PAGE = 10_000


async def fill(db: Database, leaves: int) -> None:
    created = "2026-12-08T00:00:00.000000+00:00"
    for first in range(1, leaves + 1, INSERT_PAGE):
        rows = []
        for seq in range(first, min(leaves, first + INSERT_PAGE - 1) + 1):
            head = hashlib.sha256(str(seq).encode()).hexdigest()
            trace = f"00000000-0000-7000-8000-{seq:012d}"
            text = ledger_canonical(seq, trace, head, 3, created)
            rows.append((seq, trace, head, 3, created, GENESIS, hashlib.sha256(text.encode()).hexdigest()))
        async with db.transaction() as tx:
            await tx.insert_rows(
                "trace_ledger",
                ("seq", "trace_id", "head_hash", "step_count", "created_at", "prev_hash", "entry_hash"),
                rows,
            )


async def hashes(store: TraceStore, ranges: list[tuple[int, int]]) -> list[bytes]:
    nodes = await store.tree_nodes([part for start, size in ranges for part in complete_parts(start, size)])
    return [range_hash(start, size, nodes.__getitem__) for start, size in ranges]


def percentiles(samples: list[float]) -> str:
    samples.sort()
    return f"p50 {statistics.median(samples):.2f} ms, p99 {samples[int(len(samples) * 0.99)]:.2f} ms"


async def run(db: Database, name: str, leaves: int) -> None:
    store = TraceStore(db)
    await store.migrate()
    started = time.perf_counter()
    await fill(db, leaves)
    filled = time.perf_counter()
    nodes = await store.build_tree()
    built = time.perf_counter()
    print(
        f"{name}: {leaves:,} ledger entries written in {filled - started:.1f} s; "
        f"tree built in {built - filled:.1f} s ({nodes:,} nodes)"
    )
    rng = random.Random(1)
    root = (await hashes(store, [(0, leaves)]))[0]
    inclusion, consistency = [], []
    for _ in range(PROOFS):
        index = rng.randrange(leaves)
        begin = time.perf_counter()
        entry = await store.ledger_entry_at(index + 1)
        assert entry is not None
        path = await hashes(store, [*inclusion_ranges(index, leaves), (0, leaves)])
        inclusion.append((time.perf_counter() - begin) * 1000)
        assert verify_inclusion(entry_leaf(entry), index, leaves, path[:-1], path[-1]) and path[-1] == root
        old = rng.randrange(1, leaves)
        begin = time.perf_counter()
        proof = await hashes(store, [*consistency_ranges(old, leaves), (0, old), (0, leaves)])
        consistency.append((time.perf_counter() - begin) * 1000)
        assert verify_consistency(old, leaves, proof[-2], proof[-1], proof[:-2])
    print(f"{name}: inclusion proof {percentiles(inclusion)}; consistency proof {percentiles(consistency)}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", nargs="?", type=Path)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--postgres", help="an empty Postgres database to run the same on (its tables are created)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        sqlite = await SqliteDatabase(Path(tmp) / "proofs.db").open()
        try:
            await run(sqlite, "SQLite", args.leaves)
        finally:
            await sqlite.close()
    if args.postgres:
        postgres = await PostgresDatabase(args.postgres, recycle_seconds=300).open()
        try:
            await run(postgres, "Postgres", args.leaves)
        finally:
            await postgres.close()


if __name__ == "__main__":
    asyncio.run(main())
