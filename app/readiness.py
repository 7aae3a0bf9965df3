"""Readiness: can this instance serve requests right now?

Components register checks (the provider, databases, the rate-limit storage). Results are cached
for a few seconds so that a probe every second never turns into a slow upstream call per probe,
and checks run concurrently, each bounded by a timeout. An optional check (the sandbox, unless the
operator requires it) that fails makes the instance degraded, not unready: what it serves still
works, and the failure is listed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

CheckFn = Callable[[], Awaitable[tuple[bool, str]]]

CACHE_SECONDS = 3.0  # how long one probe's answer is reused
CHECK_TIMEOUT_SECONDS = 5.0  # a check slower than this counts as failed


@dataclass(slots=True)
class ReadinessReport:
    ready: bool
    reason: str
    checks: dict[str, str] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)  # the reasons of failed optional checks


def _discard_outcome(task: asyncio.Future[tuple[bool, str]]) -> None:
    """A check abandoned at its bound: its late outcome (or error) is not wanted."""
    if not task.cancelled():
        task.exception()


class Readiness:
    def __init__(self) -> None:
        self._checks: dict[str, CheckFn] = {}
        self._timeouts: dict[str, float] = {}
        self._optional: set[str] = set()
        self._cached: ReadinessReport | None = None
        self._cached_at = 0.0
        self._lock = asyncio.Lock()

    def add(self, name: str, check: CheckFn, *, timeout: float = CHECK_TIMEOUT_SECONDS, required: bool = True) -> None:
        """``timeout``: a backstop; a check with a bound of its own gets a longer one, so that its
        own reason (e.g. ``provider_unreachable``) is the one reported. ``required=False``: a failure
        is listed in ``degraded`` and leaves the instance ready."""
        self._checks[name] = check
        self._timeouts[name] = timeout
        if not required:
            self._optional.add(name)

    async def _run(self, name: str) -> tuple[bool, str]:
        # Not wait_for: it waits for the cancelled check to finish, and a check can take longer
        # than its backstop to give up (a database bound, ORCH_DB_TIMEOUT_SEC, set above it). The
        # check is cancelled and left to end in the background; /ready answers at the bound.
        task = asyncio.ensure_future(self._checks[name]())
        done, _ = await asyncio.wait({task}, timeout=self._timeouts[name])
        if not done:
            task.cancel()
            task.add_done_callback(_discard_outcome)
            return False, "timeout"
        try:
            return task.result()
        except Exception as exc:
            return False, type(exc).__name__

    async def report(self) -> ReadinessReport:
        async with self._lock:  # concurrent probes share one round of checks
            now = time.monotonic()
            if self._cached is not None and now - self._cached_at < CACHE_SECONDS:
                return self._cached
            names = list(self._checks)
            results = await asyncio.gather(*(self._run(n) for n in names))
            checks = {name: reason for name, (_, reason) in zip(names, results, strict=True)}
            failing = [(name, reason) for name, (ok, reason) in zip(names, results, strict=True) if not ok]
            failed = [reason for name, reason in failing if name not in self._optional]
            report = ReadinessReport(
                ready=not failed,
                reason=failed[0] if failed else "ok",
                checks=checks,
                degraded=[reason for name, reason in failing if name in self._optional],
            )
            self._cached, self._cached_at = report, time.monotonic()
            return report
