"""The trace store's sustained write rate: receipts enqueued as fast as the tracer takes them,
measured as steps committed per second, on SQLite and on the Postgres server at 127.0.0.1:5432.

    python bench/store_rate.py WORKDIR
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.db.registry import Databases
from app.observability.metrics import Metrics
from app.receipts.store import TraceStore
from app.receipts.tracer import Tracer

TRACES = 20_000
STEPS_PER_TRACE = 4  # request + 3 (a demo chat writes 2, with the memory gate 3, a tool call more)
POSTGRES = "postgresql://postgres@127.0.0.1:5432"


async def rate(databases: Databases, path: Path) -> float:
    store = TraceStore(await databases.get(path))
    await store.migrate()
    tracer = Tracer(store, redact_pii=True, flush_interval=0.05, queue_max=10_000_000, metrics=Metrics())
    await tracer.start()
    started = time.perf_counter()
    for n in range(TRACES):
        trace = tracer.begin(route="/v1/chat/completions", request_id=f"r{n}", principal="owner", stream=False)
        trace.step("policy_snapshot", {"policy_hash": "ab" * 32})
        trace.step("llm_provider", {"provider": "demo", "model": "m", "latency_ms": 1.5, "attempts": 1})
        trace.step("memory_write_decision", {"decision": "deny", "reason": "deny:feature_disabled"})
        trace.end()
        if n % 500 == 0:
            await asyncio.sleep(0)  # let the writer run, as between requests
    await tracer.flush()
    elapsed = time.perf_counter() - started
    await tracer.stop()
    steps = await store.count_steps()
    assert steps == TRACES * STEPS_PER_TRACE, steps
    await databases.close()
    return steps / elapsed


async def main(workdir: Path) -> None:
    sqlite = await rate(Databases(), workdir / "store-rate.db")
    name = "orch_bench_" + uuid.uuid4().hex[:8]
    subprocess.run(["psql", f"{POSTGRES}/test", "-qc", f'CREATE DATABASE "{name}"'], check=True)
    try:
        postgres = await rate(Databases(database_url=f"{POSTGRES}/{name}"), workdir / "unused.db")
    finally:
        subprocess.run(["psql", f"{POSTGRES}/test", "-qc", f'DROP DATABASE "{name}" WITH (FORCE)'], check=True)
    print(f"\n== trace store sustained write rate ({TRACES} traces x {STEPS_PER_TRACE} steps, one process)")
    print(f"SQLite (WAL)  {sqlite:>10,.0f} steps/s")
    print(f"Postgres      {postgres:>10,.0f} steps/s")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
