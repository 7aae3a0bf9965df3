"""Retries with exponential backoff and jitter, and a circuit breaker shared by all requests.

The original built a breaker per request, so it never opened. Here one breaker per upstream lives
in the app state for the life of the process.
"""

from __future__ import annotations

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
        return max(0.0, seconds)
    return seconds if seconds >= 0 else None


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``max_failures`` consecutive failures; after ``reset_seconds`` lets one probe
    through (half-open): its success closes the circuit, its failure opens it again.

    ``max_failures <= 0`` disables the breaker. Single event loop: no locking needed.
    """

    def __init__(self, max_failures: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    def retry_after(self) -> float:
        return max(0.0, self._opened_at + self.reset_seconds - self._clock())

    def before_call(self) -> None:
        """Raise :class:`CircuitOpen` unless a call may go out now."""
        if self.max_failures <= 0 or self.state is BreakerState.CLOSED:
            return
        if self.state is BreakerState.OPEN and self.retry_after() <= 0:
            self.state = BreakerState.HALF_OPEN
            self._probe_in_flight = False
        if self.state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True  # this call is the probe
            return
        wait = max(1, int(self.retry_after() + 0.999))
        raise CircuitOpen(
            f"The model provider is failing; requests are paused for up to {wait}s (circuit breaker open).",
            headers={"Retry-After": str(wait)},
        )

    def record_success(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._probe_in_flight = False

    def record_failure(self) -> None:
        if self.max_failures <= 0:
            return
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.max_failures:
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._probe_in_flight = False

    def release_probe(self) -> None:
        """A probe that ended without a verdict (e.g. the client went away): let another one try."""
        if self.state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False
