"""The circuit breaker's accounting: one verdict per request, a probe bounded in time, an honest
Retry-After. A hand-driven clock stands in for time."""

from __future__ import annotations

import pytest

from app.errors import CircuitOpen
from app.providers.resilience import BreakerState, CircuitBreaker, parse_retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def opened(clock: Clock, *, reset: float = 30, probe: float = 10) -> CircuitBreaker:
    breaker = CircuitBreaker(max_failures=2, reset_seconds=reset, probe_seconds=probe, clock=clock)
    for _ in range(2):
        breaker.admit().failure()
    assert breaker.state is BreakerState.OPEN
    return breaker


def refused(breaker: CircuitBreaker) -> int:
    with pytest.raises(CircuitOpen) as caught:
        breaker.admit()
    return int(caught.value.headers["Retry-After"])


def test_a_probe_without_a_verdict_fails_at_its_deadline_and_retry_after_tells_the_truth() -> None:
    clock = Clock()
    breaker = opened(clock)
    assert refused(breaker) == 30
    clock.now += 30
    probe = breaker.admit()  # half-open: this one goes
    assert probe.remaining() == 10
    clock.now += 4
    assert refused(breaker) == 6  # until the probe in flight runs out of time, not "1"
    clock.now += 6
    # The probe never answered (keep-alives, a drip): it counts as failed at its deadline, and the
    # next probe may start a reset period later.
    assert refused(breaker) == 30
    assert breaker.state is BreakerState.OPEN
    probe.failure()  # its late failure is not counted twice
    assert breaker.failures == 3
    clock.now += 30
    breaker.admit().success()
    assert breaker.state is BreakerState.CLOSED


def test_a_probe_whose_caller_leaves_lets_the_next_caller_probe() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 30
    probe = breaker.admit()
    refused(breaker)
    probe.release()
    second = breaker.admit()  # at once, not after the probe's deadline
    assert second.probe is not None and second.probe != probe.probe
    second.success()
    assert breaker.state is BreakerState.CLOSED


def test_a_ticket_counts_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(max_failures=2, reset_seconds=30, probe_seconds=10, clock=clock)
    ticket = breaker.admit()
    ticket.failure()
    ticket.failure()
    ticket.release()
    assert breaker.failures == 1 and breaker.state is BreakerState.CLOSED
    assert ticket.remaining() is None  # an ordinary call has no probe deadline


def test_a_proven_probe_closes_the_circuit_an_ordinary_call_is_not_settled_early() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 30
    probe = breaker.admit()
    probe.proven()
    assert breaker.state is BreakerState.CLOSED and probe.remaining() is None
    ordinary = breaker.admit()
    ordinary.proven()
    assert not ordinary.settled
    ordinary.failure()
    assert breaker.failures == 1


def test_the_breaker_off_admits_everything() -> None:
    breaker = CircuitBreaker(max_failures=0, reset_seconds=30, probe_seconds=10)
    for _ in range(5):
        breaker.admit().failure()
    assert breaker.state is BreakerState.CLOSED


def test_retry_after_beyond_a_day_is_a_day() -> None:
    assert parse_retry_after("1e400") == 86_400
    assert parse_retry_after("nan") is None
    assert parse_retry_after("5") == 5
