"""Memory recall latency, in process: 10,000 stored memories for one user (SQLite by default), the
full-text recall of the memory stage timed for realistic questions.

    python bench/memory_recall_latency.py [COUNT] [POSTGRES_SERVER_URL]

With a Postgres server URL (postgresql://postgres@127.0.0.1:5432) the run uses a temporary
database created there and dropped afterwards.

Prints p50/p99 per recall (the store query the chat path awaits: FTS5 BM25 on SQLite, ts_rank on
Postgres). Target: p50 under 5 ms at 10,000 memories on SQLite.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.db.registry import Databases
from app.ids import new_uuid
from app.memory.gate import content_hash
from app.memory.store import MemoryStore, owner_hash
from app.timefmt import iso_utc

ROUNDS = 50  # each question is asked this many times
SUBJECTS = [
    "deployments", "the staging database", "my manager", "the quarterly report", "the garden", "the car",
    "the dentist", "invoices", "the vpn", "backups", "the release train", "the wifi password rotation",
    "lunch", "the gym", "my daughter's school", "the conference talk", "the budget", "code reviews",
]  # fmt: skip
FACTS = [
    "happen on {day} at {hour}:00", "must be approved by {name}", "are due every {day}",
    "moved to the {place}", "should never be done on {day}", "need two reviewers from {name}'s team",
    "are kept for {n} days", "cost about {n} euros", "run in the {place} region",
]  # fmt: skip
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
NAMES = ["Alice", "Bob", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hiro"]
PLACES = ["north", "basement", "cloud", "east wing", "second floor", "Frankfurt"]
QUESTIONS = [
    "What did I ask you to remember about deployments?",
    "When is the dentist?",
    "Who approves the quarterly report?",
    "How long are backups kept?",
    "Remind me what you know about the garden and the car",
    "What was the thing about code reviews on Friday?",
    "Tell me a joke about penguins",  # nothing matches
]


def memory(rng: random.Random, n: int) -> str:
    fact = rng.choice(FACTS).format(
        day=rng.choice(DAYS), hour=rng.randint(7, 19), name=rng.choice(NAMES), place=rng.choice(PLACES), n=n % 997
    )
    return f"{rng.choice(SUBJECTS)} {fact} (note {n})"


async def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    server = sys.argv[2].rstrip("/") if len(sys.argv) > 2 else ""
    if not server:
        await run(count, "")
        return
    import asyncpg

    name = "orch_bench_" + new_uuid().replace("-", "")[:12]
    admin = await asyncpg.connect(server + "/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await run(count, f"{server}/{name}")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def run(count: int, url: str) -> None:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        databases = Databases(database_url=url)
        db = await databases.get(Path(tmp) / "memory.db")
        store = MemoryStore(db, dedupe_window_seconds=86_400)
        await store.migrate()
        owner = owner_hash("bench-user")
        now = time.time()
        columns = (
            "id", "user_id_hash", "conversation_id", "scope", "content", "content_hash", "created_at",
            "last_seen_at", "ttl_minutes", "expires_at", "source", "passes", "expires_ts",
        )  # fmt: skip
        rows = []
        for n in range(count):
            text = memory(rng, n)
            stamp = iso_utc(now - n)
            rows.append((new_uuid(), owner, None, "global", text, content_hash(text), stamp, stamp, 60 * 24 * 365,
                         iso_utc(now + 86_400 * 365), "bench", 1, now + 86_400 * 365))  # fmt: skip
        # another user's memories share the index: they must not slow this one down (or leak)
        for n in range(count // 10):
            text = memory(rng, n)
            stamp = iso_utc(now)
            rows.append((new_uuid(), owner_hash("other"), None, "global", text, content_hash(text), stamp, stamp, 60,
                         iso_utc(now + 3600), "bench", 1, now + 3600))  # fmt: skip
        started = time.perf_counter()
        async with db.transaction() as tx:
            await tx.insert_rows("memory_candidates", columns, rows)
        load_s = time.perf_counter() - started
        assert await store.count(owner) == count
        for question in QUESTIONS:  # warm-up
            await store.recall(owner, conversation_id=None, query=question, limit=5)
        timings: list[float] = []
        found = 0
        for _ in range(ROUNDS):
            for question in QUESTIONS:
                t0 = time.perf_counter_ns()
                result = await store.recall(owner, conversation_id=None, query=question, limit=5)
                timings.append((time.perf_counter_ns() - t0) / 1e6)
                found += len(result)
        await databases.close()
    timings.sort()
    p50 = statistics.median(timings)
    p99 = timings[min(len(timings) - 1, round(0.99 * (len(timings) - 1)))]
    backend = "postgres" if url else "sqlite"
    print(f"\n== memory recall latency ({backend}, {count} memories for one user, {len(timings)} recalls)")
    print(f"load: {load_s:.2f} s; recall p50 {p50:.3f} ms, p99 {p99:.3f} ms, mean results {found / len(timings):.1f}")
    print("target: p50 < 5 ms on SQLite")


if __name__ == "__main__":
    asyncio.run(main())
