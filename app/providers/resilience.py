"""Retries with exponential backoff and jitter, and a circuit breaker shared by all requests.

The original built a breaker per request, so it never opened. Here one breaker per upstream lives
in the app state for the life of the process.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum

from app.errors import CircuitOpen

# Upstream statuses worth another attempt: the upstream (or a proxy in front of it) is
# overloaded or restarting. Other errors would fail the same way again.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# Never sleep longer than this between attempts, whatever Retry-After says; a longer wait is
# the caller's decision (they get the 429/503 and its Retry-After instead).
MAX_RETRY_DELAY_SEC = 10.0
# An upstream's Retry-After is passed on to the caller only as our own number, and never above a
# day: a larger one ("1e400") is not a real schedule, and would not even round to an integer.
MAX_RETRY_AFTER_SEC = 86_400.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` extra attempts; the n-th waits ``backoff * 2**n``, jittered by +-50%."""

    retries: int
    backoff: float

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` (0-based), or None to stop retrying."""
        if attempt >= self.retries:
            return None
        computed = self.backoff * (2.0**attempt) * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not crypto
        if retry_after is not None:
            if retry_after > MAX_RETRY_DELAY_SEC:
                return None
            computed = max(computed, retry_after)
        return min(computed, MAX_RETRY_DELAY_SEC)


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Retry-After in seconds: delta-seconds, or an HTTP date (seconds from now until then)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        return min(max(0.0, seconds), MAX_RETRY_AFTER_SEC)
    return min(seconds, MAX_RETRY_AFTER_SEC) if seconds >= 0 else None


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Ticket:
    """One request's pass through the breaker. Its verdict counts once, however many attempts the
    request made (its own retries must not open the circuit under it), and only the first verdict
    given counts: ``success`` (the upstream answered), ``failure``, or ``release`` (no verdict: the
    caller left, or the answer was unusable in a way that says nothing about the upstream's health).
    """

    __slots__ = ("_breaker", "deadline", "probe", "settled")

    def __init__(self, breaker: CircuitBreaker, probe: int | None = None, deadline: float | None = None) -> None:
        self._breaker = breaker
        self.probe = probe  # the half-open probe's number, None for an ordinary call
        self.deadline = deadline  # on the breaker's clock: when a probe without a verdict counts as failed
        self.settled = False

    def remaining(self) -> float | None:
        """Seconds this probe has left to reach its verdict; None: no bound (an ordinary call, or
        a probe already settled)."""
        if self.deadline is None or self.settled:
            return None
        return max(0.0, self.deadline - self._breaker.clock())

    def overdue(self) -> bool:
        """Whether this is a probe whose time ran out (settled or not)."""
        return self.deadline is not None and self._breaker.clock() >= self.deadline

    def success(self) -> None:
        if not self.settled:
            self.settled = True
            self._breaker.record_success()

    def failure(self) -> None:
        if not self.settled:
            self.settled = True
            self._breaker.record_failure(self.probe)

    def release(self) -> None:
        if not self.settled:
            self.settled = True
            if self.probe is not None:
                self._breaker.release_probe(self.probe)

    def proven(self) -> None:
        """A probe's stream delivered its first piece: the upstream is answering, so the circuit
        closes now rather than when the stream ends (a long generation would otherwise hold every
        other caller at 503 for its whole length)."""
        if self.probe is not None:
            self.success()


class CircuitBreaker:
    """Opens after ``max_failures`` consecutive failed requests; after ``reset_seconds`` lets one
    probe through (half-open): its success closes the circuit, its failure opens it again.

    A probe has ``probe_seconds`` (the request timeout) to reach a verdict: one that has not by then
    counts as failed at that moment, whatever its connection is still doing (an upstream that
    drips keep-alive comments would otherwise hold the circuit open forever). ``Retry-After`` on
    the 503 is the real wait: until the next probe may start, or until the probe in flight runs out
    of time.

    ``max_failures <= 0`` disables the breaker. Single event loop: no locking needed.
    """

    def __init__(
        self,
        max_failures: int,
        reset_seconds: float,
        probe_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.reset_seconds = reset_seconds
        self.probe_seconds = probe_seconds
        self.clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._probes = 0  # probes started so far: each ticket knows its number
        self._probe: int | None = None  # the probe in flight
        self._probe_deadline = 0.0

    def _settle_overdue_probe(self, now: float) -> None:
        if self.state is BreakerState.HALF_OPEN and self._probe is not None and now >= self._probe_deadline:
            self.failures += 1
            self._open(self._probe_deadline)

    def _open(self, at: float) -> None:
        self.state = BreakerState.OPEN
        self._opened_at = at
        self._probe = None

    def retry_after(self) -> float:
        """Seconds until a call may go out: the next probe's start, or the probe in flight's end."""
        now = self.clock()
        self._settle_overdue_probe(now)
        if self.state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.reset_seconds - now)
        if self.state is BreakerState.HALF_OPEN and self._probe is not None:
            return max(0.0, self._probe_deadline - now)
        return 0.0

    def admit(self) -> Ticket:
        """A ticket for one request, or :class:`CircuitOpen` unless a call may go out now."""
        if self.max_failures <= 0 or self.state is BreakerState.CLOSED:
            return Ticket(self)
        now = self.clock()
        self._settle_overdue_probe(now)
        if self.state is BreakerState.OPEN and now >= self._opened_at + self.reset_seconds:
            self.state = BreakerState.HALF_OPEN
            self._probe = None
        if self.state is BreakerState.HALF_OPEN and self._probe is None:
            self._probes += 1  # this call is the probe
            self._probe = self._probes
            self._probe_deadline = now + self.probe_seconds
            return Ticket(self, self._probe, self._probe_deadline)
        wait = max(1, math.ceil(self.retry_after()))
        raise CircuitOpen(
            f"The model provider is failing; requests are paused for up to {wait}s (circuit breaker open).",
            headers={"Retry-After": str(wait)},
        )

    def record_success(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._probe = None

    def record_failure(self, probe: int | None = None) -> None:
        if self.max_failures <= 0:
            return
        if probe is not None and probe != self._probe:
            return  # a probe that ran out of time: already counted as failed at its deadline
        self.failures += 1
        if probe is not None or self.state is BreakerState.HALF_OPEN or self.failures >= self.max_failures:
            self._open(self.clock())

    def release_probe(self, probe: int) -> None:
        """A probe that ended without a verdict (e.g. the client went away): let another one try."""
        if self.state is BreakerState.HALF_OPEN and self._probe == probe:
            self._probe = None
