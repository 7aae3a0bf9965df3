"""The tracer: every decision becomes a receipt, written off the request's hot path.

Request code calls :meth:`Tracer.begin` and then ``trace.step(type, payload)`` / ``trace.end()``:
each is one ``put_nowait`` on a bounded queue. One writer task takes what accumulated during
``ORCH_TRACE_FLUSH_INTERVAL_MS``, redacts it, chains it (sequence numbers and hashes are computed
here, at write time, in queue order) and commits it in one transaction (group commit). A crash
loses at most the last interval; shutdown drains the queue. A failed write is retried, then
logged and counted; it never fails a request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from app.observability.logging import get_logger
from app.observability.metrics import Metrics
from app.scrub import redact
from app.tracing.chain import GENESIS, link
from app.tracing.store import Finish, StepRow, TraceRow, TraceStore

log = get_logger("tracing")

MAX_BATCH_EVENTS = 5000  # one transaction never grows past this
WRITE_ATTEMPTS = 3  # a batch is tried this often before it is dropped (and counted)
STORED_VALUE_MAX_CHARS = 4000  # receipts record decisions, not documents: long strings are capped


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(slots=True)
class _Begin:
    trace_id: str
    created_at: str
    metadata: dict[str, Any]
    principal: str | None
    request_id: str | None


@dataclass(slots=True)
class _Step:
    trace_id: str
    step_type: str
    created_at: str
    payload: dict[str, Any]


@dataclass(slots=True)
class _End:
    trace_id: str


@dataclass(slots=True)
class _Flush:
    """Resolved by the writer once everything queued before it is committed."""

    done: asyncio.Future[None]


_Event = _Begin | _Step | _End | _Flush


class Trace:
    """One request's receipt. ``id`` is the server-generated trace id returned as ``request_id``."""

    __slots__ = ("_ended", "_tracer", "id")

    def __init__(self, tracer: Tracer | None, trace_id: str) -> None:
        self._tracer = tracer
        self.id = trace_id
        self._ended = False

    def step(self, step_type: str, payload: dict[str, Any]) -> None:
        if self._tracer is not None and not self._ended:
            self._tracer.put(_Step(self.id, step_type, _now(), payload))

    def end(self) -> None:
        if self._tracer is not None and not self._ended:
            self._ended = True
            self._tracer.put(_End(self.id))


@dataclass(slots=True)
class _Chain:
    seq: int = 0
    prev: str = GENESIS


@dataclass
class _Prepared:
    traces: list[TraceRow] = field(default_factory=list)
    steps: list[StepRow] = field(default_factory=list)
    finishes: list[Finish] = field(default_factory=list)


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
        self._queue: asyncio.Queue[_Event | None] = asyncio.Queue(maxsize=queue_max)
        self._chains: dict[str, _Chain] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_drop_log = 0.0
        self.steps_written = metrics.counter("orch_trace_steps_written_total", "Receipt steps committed.")
        self.write_errors = metrics.counter("orch_trace_write_errors_total", "Receipt batches that failed to commit.")
        self.dropped = metrics.counter(
            "orch_trace_dropped_total", "Receipt events dropped (queue full or batch failed).", ("reason",)
        )
        self.batch_seconds = metrics.histogram(
            "orch_trace_batch_seconds",
            "Time to commit one batch of receipts.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
        )
        metrics.gauge("orch_trace_queue_depth", "Receipt events waiting for the writer.").set_function(
            self._queue.qsize
        )

    # --- request side (hot path: no awaits, no I/O) ------------------------------------------
    def begin(
        self, *, route: str, request_id: str, principal: str, stream: bool, extra: dict[str, Any] | None = None
    ) -> Trace:
        """Open a trace and record its ``request`` step. With tracing off the id is the request id."""
        if not self.enabled:
            return Trace(None, request_id)
        trace = Trace(self, str(uuid.uuid4()))
        request = {"route": route, "stream": stream, "principal": principal, "request_id": request_id}
        if extra:
            request.update(extra)
        self.put(_Begin(trace.id, _now(), request, principal, request_id))
        trace.step("request", request)
        return trace

    def put(self, event: _Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped.labels("queue_full").inc()
            now = time.monotonic()
            if now - self._last_drop_log > 10:
                self._last_drop_log = now
                log.error("receipt queue full; dropping events (is the database slow or down?)")

    # --- writer side -----------------------------------------------------------------------
    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="trace-writer")

    async def stop(self) -> None:
        """Drain the queue and stop the writer."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None

    async def flush(self) -> None:
        """Wait until everything queued so far is committed (tests; exporting right after a request)."""
        if self._task is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Flush(done))
        await done

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            batch: list[_Event] = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
                if not isinstance(first, _Flush):
                    # Group commit: let the interval's worth of events gather, then take them all.
                    await asyncio.sleep(self.flush_interval)
            while len(batch) < MAX_BATCH_EVENTS:
                try:
                    event = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if event is None:
                    stopping = True
                    continue
                batch.append(event)
            waiters = [event.done for event in batch if isinstance(event, _Flush)]
            try:
                if len(waiters) < len(batch):
                    await self._write(self._prepare(batch))
            finally:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    def _prepare(self, batch: list[_Event]) -> _Prepared:
        prepared = _Prepared()
        pii = self.redact_pii
        for event in batch:
            if isinstance(event, _Step):
                chain = self._chains.setdefault(event.trace_id, _Chain())
                chain.seq += 1
                payload, _ = redact(event.payload, pii=pii, max_chars=STORED_VALUE_MAX_CHARS)
                text = orjson.dumps(
                    {
                        "created_at": event.created_at,
                        "payload": payload,
                        "seq": chain.seq,
                        "step_type": event.step_type,
                        "trace_id": event.trace_id,
                    },
                    option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
                    default=str,
                ).decode()
                step_hash = link(chain.prev, text)
                prepared.steps.append(
                    StepRow(event.trace_id, chain.seq, event.step_type, text, event.created_at, chain.prev, step_hash)
                )
                chain.prev = step_hash
            elif isinstance(event, _Begin):
                self._chains[event.trace_id] = _Chain()
                metadata, _ = redact(event.metadata, pii=pii, max_chars=STORED_VALUE_MAX_CHARS)
                prepared.traces.append(
                    TraceRow(
                        event.trace_id,
                        event.created_at,
                        orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS, default=str).decode(),
                        event.principal,
                        event.request_id,
                    )
                )
            elif isinstance(event, _End):
                ended = self._chains.pop(event.trace_id, None)
                if ended is not None and ended.seq:
                    prepared.finishes.append(Finish(event.trace_id, ended.seq, ended.prev, _now()))
        return prepared

    async def _write(self, prepared: _Prepared) -> None:
        assert self.store is not None
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            started = time.perf_counter()
            try:
                await self.store.write_batch(prepared.traces, prepared.steps, prepared.finishes)
            except Exception as exc:
                self.write_errors.inc()
                log.error(
                    "receipt batch failed to commit",
                    extra={"attempt": attempt, "error_type": type(exc).__name__, "steps": len(prepared.steps)},
                )
                if attempt < WRITE_ATTEMPTS:
                    await asyncio.sleep(0.2 * 2**attempt)
                continue
            self.batch_seconds.observe(time.perf_counter() - started)
            self.steps_written.inc(len(prepared.steps))
            return
        self.dropped.labels("write_failed").inc(len(prepared.steps) + len(prepared.traces) + len(prepared.finishes))
