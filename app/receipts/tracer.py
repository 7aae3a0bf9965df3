"""The tracer: every decision becomes a receipt, written off the request's hot path.

Request code calls :meth:`Tracer.begin`, then ``trace.step(type, payload)`` and ``trace.end()``.
Steps collect in the trace itself (a list append); ``end()`` hands the whole trace to the writer
in one append to a bounded in-memory queue. A long-lived trace (a stream) hands over what it has
with ``trace.flush()`` so that its start is committed early.

One writer task takes what accumulated during ``ORCH_TRACE_FLUSH_INTERVAL_MS``, redacts it,
chains it (sequence numbers and hashes are computed here, at write time, in queue order) and
commits it in one transaction (group commit). A crash loses at most the last interval; shutdown
drains the queue. A failed write is retried, then logged and counted; it never fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import orjson

from app.ids import new_time_uuid
from app.observability.logging import get_logger
from app.observability.metrics import Metrics
from app.receipts import steps
from app.receipts.chain import GENESIS, link
from app.receipts.steps import StepType
from app.receipts.store import Finish, StepRow, TraceRow, TraceStore
from app.scrub import scrub
from app.timefmt import iso_now, iso_utc

log = get_logger("tracing")

MAX_BATCH_TRACES = 5000  # one transaction never grows past this many trace records
PREPARE_SLICE = 64  # traces prepared between two yields to the event loop (about half a millisecond)
WRITE_ATTEMPTS = 3  # a batch is tried this often before it is dropped (and counted)
LOST_TRACES_MAX = 100_000  # traces remembered as incomplete until their end arrives
STORED_VALUE_MAX_CHARS = 4000  # receipts record decisions, not documents: long strings are capped
_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


@dataclass(slots=True)
class _Begin:
    created_at: float  # also its request step's time
    principal: str
    request_id: str


@dataclass(slots=True)
class _Record:
    """What a trace hands to the writer: its start (first hand-over only), steps, and whether it ended."""

    trace_id: str
    begin: _Begin | None
    steps: list[tuple[str, float, Mapping[str, Any]]]  # (step_type, time.time(), payload)
    ended: bool


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector does not run while a batch is prepared and written.

    A batch keeps a few thousand container objects alive at once (the records, then the rows
    built from them) for the milliseconds it takes to commit, while requests keep allocating
    on the same loop. Every young-generation collection in that window walks all of them and
    promotes them to the older generations, whose collections then walk them again, only for
    them all to be freed at the end of the batch. Measured, demo chat at 16 connections:
    collections took 6.2 us per request with receipts on (1.3 with them off) and 1.0 with this
    pause. Nothing is lost by waiting: refcounting frees non-cyclic garbage as usual, and the
    first allocation after the pause starts the collection that was due. The pause covers
    preparing the batch and each attempt to commit it (milliseconds; an attempt waits at most
    the busy timeout for another process's write lock), not the wait before a retry. If the
    collector was off already, it stays off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _answer(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


@functools.lru_cache(maxsize=256)
def _encoded(step_type: str) -> str:
    return orjson.dumps(step_type).decode()


class Trace:
    """One request's receipt. ``id`` is the server-generated trace id returned as ``request_id``."""

    __slots__ = ("_begin", "_steps", "_tracer", "id")

    def __init__(self, tracer: Tracer | None, trace_id: str, begin: _Begin | None = None) -> None:
        self._tracer = tracer
        self.id = trace_id
        self._begin = begin
        self._steps: list[tuple[str, float, Mapping[str, Any]]] = []

    @overload
    def step(self, step_type: Literal["request"], payload: steps.RequestStep) -> None: ...
    @overload
    def step(self, step_type: Literal["policy_snapshot"], payload: steps.PolicySnapshotStep) -> None: ...
    @overload
    def step(self, step_type: Literal["llm_provider"], payload: steps.LlmProviderStep) -> None: ...
    @overload
    def step(self, step_type: Literal["error"], payload: steps.ErrorStep) -> None: ...
    @overload
    def step(self, step_type: Literal["agent"], payload: steps.AgentStep) -> None: ...
    @overload
    def step(self, step_type: Literal["route_decision"], payload: steps.RouteDecisionStep) -> None: ...
    @overload
    def step(self, step_type: Literal["intent_router"], payload: steps.IntentRouterStep) -> None: ...
    @overload
    def step(self, step_type: Literal["semantic_router"], payload: steps.SemanticRouterStep) -> None: ...
    @overload
    def step(self, step_type: Literal["tool_round"], payload: steps.ToolRoundStep) -> None: ...
    @overload
    def step(self, step_type: Literal["tool_result"], payload: steps.ToolResultStep) -> None: ...
    @overload
    def step(self, step_type: Literal["tool_approval"], payload: steps.ToolApprovalStep) -> None: ...
    @overload
    def step(self, step_type: Literal["tool_approval_decision"], payload: steps.ToolApprovalDecisionStep) -> None: ...
    @overload
    def step(self, step_type: Literal["memory_decision"], payload: steps.MemoryDecisionStep) -> None: ...
    @overload
    def step(self, step_type: Literal["memory_recall"], payload: steps.MemoryRecallStep) -> None: ...
    @overload
    def step(self, step_type: Literal["memory_delete"], payload: steps.MemoryDeleteStep) -> None: ...
    def step(self, step_type: StepType, payload: Mapping[str, Any]) -> None:
        """Record a step; its payload is the step type's TypedDict (app/receipts/steps.py), checked
        by mypy only: nothing is validated here, on every request's path."""
        if self._tracer is not None:
            self._steps.append((step_type, time.time(), payload))

    def flush(self) -> None:
        """Hand what the trace has so far to the writer (long-lived traces: streams)."""
        if self._tracer is not None and (self._steps or self._begin):
            self._tracer.put(_Record(self.id, self._begin, self._steps, ended=False))
            self._begin, self._steps = None, []

    def end(self) -> None:
        if self._tracer is not None:
            self._tracer.put(_Record(self.id, self._begin, self._steps, ended=True))
            self._tracer = None  # steps after the end are ignored


@dataclass(slots=True)
class _Chain:
    seq: int = 0
    prev: str = GENESIS
    principal: str | None = None  # the ledger entry commits to it when the trace ends


@dataclass
class _Prepared:
    traces: list[TraceRow] = field(default_factory=list)
    steps: list[StepRow] = field(default_factory=list)  # rows in the column order of STEP_COLUMNS
    finishes: list[Finish] = field(default_factory=list)

    def release(self) -> None:
        """Free the rows (once committed)."""
        self.traces.clear()
        self.steps.clear()
        self.finishes.clear()


class Tracer:
    def __init__(
        self,
        store: TraceStore | None,
        *,
        redact_pii: bool,
        flush_interval: float,
        queue_max: int,
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.enabled = store is not None
        self.redact_pii = redact_pii
        self.flush_interval = flush_interval
        self.queue_max = queue_max
        self._queue: deque[_Record] = deque()
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()  # a flush or the shutdown: no waiting out the interval
        self._stopping = False
        self._waiters: list[asyncio.Future[None]] = []
        self._chains: dict[str, _Chain] = {}
        # Traces part of which was dropped (queue full, batch failed) and whose end is still to come:
        # what follows is dropped too, so that no later batch finishes (and enters in the ledger) a
        # trace whose record or earlier steps were never stored.
        self._lost: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_drop_log = 0.0
        # Whether the last attempt at committing a batch failed: the database answers a ping
        # (read-only file, full disk, a file deleted under us) yet takes no receipt.
        self.writes_failing = False
        self.steps_written = metrics.counter("orch_trace_steps_written_total", "Receipt steps committed.")
        self.write_errors = metrics.counter("orch_trace_write_errors_total", "Receipt batches that failed to commit.")
        self.dropped = metrics.counter(
            "orch_trace_dropped_total", "Receipt records dropped (queue full or batch failed).", ("reason",)
        )
        self.batch_seconds = metrics.histogram(
            "orch_trace_batch_seconds",
            "Time to commit one batch of receipts.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
        )
        metrics.gauge("orch_trace_queue_depth", "Receipt records waiting for the writer.").set_function(
            lambda: len(self._queue)
        )

    # --- request side (hot path: no awaits, no I/O) ------------------------------------------
    def begin(
        self, *, route: str, request_id: str, principal: str, stream: bool, extra: dict[str, Any] | None = None
    ) -> Trace:
        """Open a trace and record its ``request`` step. With tracing off the id is the request id."""
        if not self.enabled:
            return Trace(None, request_id)
        request: dict[str, Any] = {"route": route, "stream": stream, "principal": principal, "request_id": request_id}
        if extra:
            request.update(extra)
        now = time.time()
        trace = Trace(self, new_time_uuid(), _Begin(now, principal, request_id))
        trace._steps.append(("request", now, request))
        return trace

    def put(self, record: _Record) -> None:
        if self._lost and record.trace_id in self._lost:
            # An earlier part of this trace was dropped: the rest cannot chain onto it.
            self.dropped.labels("trace_incomplete").inc()
            if record.ended:
                self._lost.discard(record.trace_id)
            return
        if len(self._queue) >= self.queue_max:
            self.dropped.labels("queue_full").inc()
            if not record.ended:
                self._lose(record.trace_id)
            now = time.monotonic()
            if now - self._last_drop_log > 10:
                self._last_drop_log = now
                log.error("receipt queue full; dropping records (is the database slow or down?)")
            return
        self._queue.append(record)
        if not self._wake.is_set():
            self._wake.set()

    # --- writer side -----------------------------------------------------------------------
    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="trace-writer")

    async def stop(self) -> None:
        """Drain the queue and stop the writer."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        self._urgent.set()
        await self._task
        self._task = None

    async def flush(self) -> None:
        """Wait until everything handed over so far is committed (tests; export after a request)."""
        if self._task is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        self._wake.set()
        self._urgent.set()
        await done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not (self._waiters or self._stopping):
                await self._gather()
            # Only what is queued now is written in this round (and waiters asked before now are
            # answered after it). Records handed over while it is written wait for the next
            # interval: draining until the queue is empty would, under steady load, turn group
            # commit into a stream of tiny transactions (at one connection, one every few
            # requests), each paying for its own BEGIN, ledger head and COMMIT. A put after the
            # clear above sets the event again, so nothing waits longer than one more interval.
            waiters, self._waiters = self._waiters, []
            due = len(self._queue)
            while due > 0 and self._queue:
                due -= await self._write_next_batch(due)
            _answer(waiters)
            if self._stopping and not self._queue:
                _answer(self._waiters)
                self._waiters = []
                return

    async def _gather(self) -> None:
        """Group commit: let the interval's worth of records gather (a flush or the shutdown
        ends the wait early)."""
        self._urgent.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.flush_interval):
                await self._urgent.wait()

    async def _write_next_batch(self, due: int) -> int:
        """Take up to ``due`` (at most MAX_BATCH_TRACES) records from the queue, prepare them,
        commit them (with retries); return how many were taken. The collector is paused while the
        batch's objects are alive, not while a failed write waits to be retried (see
        _collector_paused)."""
        batch = [self._queue.popleft() for _ in range(min(due, len(self._queue), MAX_BATCH_TRACES))]
        taken = len(batch)
        prepared = _Prepared()
        with _collector_paused():
            for start in range(0, len(batch), PREPARE_SLICE):
                if start:
                    await asyncio.sleep(0)  # let requests run between slices: no long stall
                self._prepare(batch[start : start + PREPARE_SLICE], prepared)
            batch.clear()  # the records are rows now: freed before the collector runs again
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            with _collector_paused():
                if await self._commit(prepared, attempt):
                    prepared.release()
                    return taken
            if attempt < WRITE_ATTEMPTS:
                await asyncio.sleep(0.2 * 2**attempt)
        self.dropped.labels("write_failed").inc(len(prepared.traces) + len(prepared.steps))
        # The traces of this batch that are to continue: their chain state counts rows that were
        # never stored. (Every hand-over that does not end its trace carries at least one step.)
        for trace_id in {row[0] for row in prepared.steps}:
            if self._chains.pop(trace_id, None) is not None:
                self._lose(trace_id)
        return taken

    def _lose(self, trace_id: str) -> None:
        if len(self._lost) >= LOST_TRACES_MAX:
            self._lost.clear()  # bounded; an end that never comes must not grow it forever
        self._lost.add(trace_id)

    def _payload_json(self, value: Mapping[str, Any]) -> str:
        """The payload as canonical JSON, redacted (and capped) before anything is stored."""
        cleaned = scrub(value, pii=self.redact_pii, max_chars=STORED_VALUE_MAX_CHARS)
        return orjson.dumps(cleaned, option=_CANONICAL, default=str).decode()

    def _prepare(self, batch: list[_Record], prepared: _Prepared) -> None:
        """Redact, sequence and hash ``batch`` (in queue order) into ``prepared``.

        This is the receipts' main cost on the service's core (every step of every request passes
        here), so it builds plain tuples and strings and calls as little as it can.
        """
        steps = prepared.steps
        payload_json = self._payload_json
        lost = self._lost
        for record in batch:
            trace_id = record.trace_id
            if lost and trace_id in lost:  # queued before an earlier part of its trace was dropped
                self.dropped.labels("trace_incomplete").inc()
                if record.ended:
                    lost.discard(trace_id)
                continue
            chain = self._chains.pop(trace_id, None)
            begin = record.begin
            if chain is not None:
                seq, prev, principal = chain.seq, chain.prev, chain.principal
            else:
                seq, prev, principal = 0, GENESIS, begin.principal if begin is not None else None
            first_created = created = None
            for step_type, at, raw in record.steps:
                seq += 1
                created = iso_utc(at)
                if first_created is None:
                    first_created = created  # a trace's first hand-over starts with its request step
                payload = payload_json(raw)
                # The canonical step, keys in sorted order, assembled around the payload's JSON
                # (created_at is an ISO time and trace_id a UUID: neither needs JSON escaping).
                text = (
                    f'{{"created_at":"{created}","payload":{payload},"seq":{seq},'
                    f'"step_type":{_encoded(step_type)},"trace_id":"{trace_id}"}}'
                )
                step_hash = link(prev, text)
                steps.append((trace_id, seq, step_type, text, created, prev, step_hash))
                prev = step_hash
            # A trace finishes at its last step (the hand-over that ends it usually carries it).
            finish: Finish | None = None
            if record.ended and seq:
                finish = (trace_id, seq, prev, created or iso_now(), principal)
            if begin is not None:
                prepared.traces.append(
                    (
                        trace_id,
                        first_created or iso_utc(begin.created_at),
                        begin.principal,
                        begin.request_id,
                        finish,  # begun and ended in one hand-over: one INSERT, no UPDATE
                    )
                )
            if finish is not None:
                prepared.finishes.append(finish)
            elif not record.ended:
                self._chains[trace_id] = _Chain(seq, prev, principal)  # more to come

    async def _commit(self, prepared: _Prepared, attempt: int) -> bool:
        """One attempt at committing the batch; a failure is logged and counted."""
        assert self.store is not None
        started = time.perf_counter()
        try:
            await self.store.write_batch(prepared.traces, prepared.steps, prepared.finishes)
        except Exception as exc:
            self.write_errors.inc()
            self.writes_failing = True
            log.error(
                "receipt batch failed to commit",
                extra={"attempt": attempt, "error_type": type(exc).__name__, "steps": len(prepared.steps)},
            )
            return False
        self.batch_seconds.observe(time.perf_counter() - started)
        self.steps_written.inc(len(prepared.steps))
        self.writes_failing = False
        return True

    async def readiness_check(self) -> tuple[bool, str]:
        """Not ready while receipts cannot be committed: every request would go unrecorded."""
        return (False, "receipt_writes_failing") if self.writes_failing else (True, "ok")
