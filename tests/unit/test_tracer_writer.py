"""The receipts writer's loop: one group commit per interval however busy it is, flushes and
shutdown that miss nothing handed over before them; and the garbage collector, paused while a
batch is prepared and committed, on again afterwards and while a failed batch waits to be retried,
left off when it was off. (A recording store stands in for the database: what is under test is
the writer's own loop; the real stores are tested in tests/api/test_receipts.py.)"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator, Sequence

import pytest

from app.observability.metrics import Metrics
from app.receipts.store import Finish, StepRow, TraceRow
from app.receipts.tracer import Tracer


class RecordingStore:
    """Records, at each write, whether the collector was enabled; fails the first ``failures``."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.collector_on_at_write: list[bool] = []
        self.collector_on_during_backoff: list[bool] = []
        self.steps: list[StepRow] = []

    async def write_batch(
        self, traces: Sequence[TraceRow], steps: Sequence[StepRow], finishes: Sequence[Finish]
    ) -> None:
        self.collector_on_at_write.append(gc.isenabled())
        await asyncio.sleep(0)  # a real store yields between statements: the pause spans them
        self.collector_on_at_write.append(gc.isenabled())
        if self.failures:
            self.failures -= 1
            # 50 ms into the 400 ms wait before the retry:
            asyncio.get_running_loop().call_later(0.05, lambda: self.collector_on_during_backoff.append(gc.isenabled()))
            raise ConnectionError("database unavailable")
        self.steps.extend(steps)


@pytest.fixture
def collector_on() -> Iterator[None]:
    was_on = gc.isenabled()
    gc.enable()
    yield
    if not was_on:
        gc.disable()


def _tracer(store: RecordingStore | BusyStore, interval: float = 0.001) -> Tracer:
    return Tracer(store, redact_pii=True, flush_interval=interval, queue_max=10_000, metrics=Metrics())  # type: ignore[arg-type]


def _receipts(tracer: Tracer, count: int) -> None:
    for n in range(count):
        trace = tracer.begin(route="/v1/chat/completions", request_id=f"r{n}", principal="owner", stream=False)
        trace.step("llm_provider", {"provider": "demo", "usage": {"total_tokens": n}})
        trace.end()


async def test_the_collector_is_paused_during_a_batch_and_on_again_after(collector_on: None) -> None:
    store = RecordingStore()
    tracer = _tracer(store)
    await tracer.start()
    _receipts(tracer, 500)
    await tracer.flush()
    assert gc.isenabled()  # between batches
    await tracer.stop()
    assert store.collector_on_at_write and not any(store.collector_on_at_write)
    assert len(store.steps) == 1000
    assert gc.isenabled()


async def test_the_collector_runs_while_a_failed_batch_waits_for_its_retry(collector_on: None) -> None:
    store = RecordingStore(failures=1)
    tracer = _tracer(store)
    await tracer.start()
    _receipts(tracer, 3)
    await tracer.flush()
    await tracer.stop()
    assert store.collector_on_during_backoff == [True]
    assert not any(store.collector_on_at_write)  # the failed attempt and the retry
    assert len(store.steps) == 6  # the retry committed the batch
    assert gc.isenabled()


async def test_a_collector_that_was_off_stays_off(collector_on: None) -> None:
    store = RecordingStore()
    tracer = _tracer(store)
    await tracer.start()
    gc.disable()
    _receipts(tracer, 10)
    await tracer.flush()
    await tracer.stop()
    assert not gc.isenabled()
    assert len(store.steps) == 20


class BusyStore:
    """Records each commit's time and size; requests keep arriving while each of the first
    ``arrivals`` batches is committed."""

    def __init__(self, arrivals: int) -> None:
        self.arrivals = arrivals
        self.tracer: Tracer | None = None
        self.commit_times: list[float] = []
        self.batch_sizes: list[int] = []
        self.steps: list[StepRow] = []

    async def write_batch(
        self, traces: Sequence[TraceRow], steps: Sequence[StepRow], finishes: Sequence[Finish]
    ) -> None:
        self.commit_times.append(time.monotonic())
        self.batch_sizes.append(len(traces))
        if self.arrivals and self.tracer is not None:
            self.arrivals -= 1
            _receipts(self.tracer, 3)
        await asyncio.sleep(0)
        self.steps.extend(steps)


async def _busy(arrivals: int, interval: float) -> tuple[BusyStore, Tracer]:
    store = BusyStore(arrivals)
    store.tracer = _tracer(store, interval)
    await store.tracer.start()
    return store, store.tracer


async def test_records_arriving_during_a_commit_wait_for_the_next_interval() -> None:
    # Draining until the queue was empty turned steady load into back-to-back tiny transactions.
    interval = 0.05
    store, tracer = await _busy(arrivals=4, interval=interval)
    _receipts(tracer, 5)
    while len(store.commit_times) < 5:
        await asyncio.sleep(interval / 5)
    await tracer.stop()
    assert store.batch_sizes == [5, 3, 3, 3, 3]
    gaps = [later - earlier for earlier, later in zip(store.commit_times, store.commit_times[1:], strict=False)]
    assert min(gaps) >= interval * 0.9, gaps  # each one waited for its interval
    assert len(store.steps) == 2 * 17


async def test_a_flush_asked_during_a_commit_waits_for_the_records_before_it() -> None:
    store, tracer = await _busy(arrivals=1, interval=10.0)
    _receipts(tracer, 2)
    first = asyncio.create_task(tracer.flush())
    while not store.commit_times:
        await asyncio.sleep(0)
    # The first batch is being committed and three more records have just arrived.
    await asyncio.wait_for(tracer.flush(), timeout=5)  # no 10 s interval for a flush
    assert first.done()
    assert store.batch_sizes == [2, 3]
    assert len(store.steps) == 2 * 5
    await tracer.stop()


async def test_shutdown_writes_what_arrives_during_the_last_commits() -> None:
    store, tracer = await _busy(arrivals=3, interval=10.0)
    _receipts(tracer, 4)
    await asyncio.wait_for(tracer.stop(), timeout=5)
    assert store.batch_sizes == [4, 3, 3, 3]
    assert len(store.steps) == 2 * 13


async def test_readiness_fails_while_batches_fail_and_recovers_with_the_next_commit() -> None:
    """A database that answers a ping but takes no write (a read-only file, a full disk) must not
    look ready: every request would go unrecorded."""
    store = RecordingStore(failures=1)
    tracer = _tracer(store)
    await tracer.start()
    assert await tracer.readiness_check() == (True, "ok")
    _receipts(tracer, 1)
    deadline = time.monotonic() + 2
    while not tracer.writes_failing and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert await tracer.readiness_check() == (False, "receipt_writes_failing")
    await tracer.flush()  # the retry commits
    assert await tracer.readiness_check() == (True, "ok")
    await tracer.stop()
