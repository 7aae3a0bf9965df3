"""Request rate limiting on the `limits` library's async storages (memory or Redis).

slowapi is a thin layer over `limits`; we use `limits` directly because slowapi's middleware halves
throughput, its decorator costs ~16% on the hot path (DESIGN.md, convention 5), and its storage calls
are synchronous, which would block the event loop on every request with Redis. Here each request is
one awaited ``INCR`` per configured limit on a clock-aligned fixed window, which also gives the
``x-ratelimit-*`` headers without a second round trip. With ``memory://`` the counters are a dict in
this process (:class:`LocalCounters`).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage, Storage

from app.observability.logging import get_logger

log = get_logger("ratelimit")

_KEY_PREFIX = "orch-rl"
# A shared storage that does not answer must not slow every request down: each hit waits at most
# this long, and after a failure the storage is left alone (requests go through) for a while.
STORAGE_TIMEOUT_S = 0.5
STORAGE_RETRY_AFTER_S = 5.0


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """The outcome of one hit: whether it is allowed, and the values for the response headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the current window ends

    def headers(self) -> dict[str, str]:
        result = {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed:
            result["retry-after"] = str(max(1, math.ceil(self.reset_after)))
        return result


class LocalCounters:
    """Fixed-window counters in this process (``memory://``).

    The same interface as limits' async storages (``incr``, ``check``) without their per-call
    locks and expiry tasks: a single event loop needs neither, and this runs on every request.
    Windows are clock-aligned, so a finished window is simply forgotten at the next sweep.
    """

    _SWEEP_EVERY = 10_000  # increments between sweeps of expired windows

    def __init__(self) -> None:
        self._counts: dict[str, tuple[float, int]] = {}
        self._since_sweep = 0

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = time.time()
        expires, count = self._counts.get(key, (0.0, 0))
        if expires <= now:
            expires, count = now + expiry, 0
        count += amount
        self._counts[key] = (expires, count)
        self._since_sweep += 1
        if self._since_sweep >= self._SWEEP_EVERY:
            self._since_sweep = 0
            self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
        return count

    async def check(self) -> bool:
        return True


def _storage_for(url: str) -> Storage | LocalCounters:
    parts = urlsplit(url)
    if parts.scheme == "memory":
        return LocalCounters()
    # limits names its async Redis storage "async+redis://"; use the redis-py client we ship.
    scheme = "async+" + parts.scheme
    return RedisStorage(urlunsplit((scheme, *parts[1:])), implementation="redispy", key_prefix=_KEY_PREFIX)


class RateLimiter:
    """Counts hits per key against every limit in ``ORCH_RATE_LIMIT`` (e.g. "10/second;300/hour")."""

    def __init__(self, spec: str, storage_url: str) -> None:
        self.items: list[RateLimitItem] = parse_many(spec)
        self.storage_url = storage_url
        self.storage = _storage_for(storage_url)
        self._shared = not isinstance(self.storage, LocalCounters)
        self._last_error_log = 0.0
        self._skip_until = 0.0  # monotonic: after a failure, requests go through without trying

    async def hit(self, key: str) -> RateLimitState | None:
        """Count one request for ``key``. None when the storage failed (the request goes through).

        Failing open is deliberate: an unreachable Redis must not take the API down. A storage
        that does not answer within STORAGE_TIMEOUT_S counts as failed, and after a failure it is
        tried again only after STORAGE_RETRY_AFTER_S, so a hung Redis costs a few requests half a
        second, not every request. The failure is logged (at most every 10 s) and ``/ready``
        lists the storage as unavailable.
        """
        if self._skip_until and time.monotonic() < self._skip_until:
            return None
        now = time.time()
        tightest: RateLimitState | None = None
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT_S if self._shared else None):
                tightest = await self._count(key, now)
        except Exception as exc:
            self._skip_until = time.monotonic() + STORAGE_RETRY_AFTER_S
            if now - self._last_error_log > 10:
                self._last_error_log = now
                log.warning("rate limit storage failed; allowing requests", extra={"error": type(exc).__name__})
            return None
        self._skip_until = 0.0
        return tightest

    async def _count(self, key: str, now: float) -> RateLimitState | None:
        tightest: RateLimitState | None = None
        for item in self.items:
            window = item.get_expiry()
            index = int(now // window)
            count = await self.storage.incr(f"{item.key_for(key)}/{index}", window)
            state = RateLimitState(
                allowed=count <= item.amount,
                limit=item.amount,
                remaining=max(0, item.amount - count),
                reset_after=(index + 1) * window - now,
            )
            if tightest is None or not state.allowed or state.remaining < tightest.remaining:
                tightest = state
            if not state.allowed:
                break
        return tightest

    async def readiness_check(self) -> tuple[bool, str]:
        """For /ready: does the shared storage answer? Listed in ``checks``, but never what makes
        the service unready: requests go through without it, and a load balancer that took every
        replica out because Redis is down would take the API down after all."""
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT_S):
                ok = bool(await self.storage.check())
        except Exception:
            ok = False
        return True, "ok" if ok else "rate_limit_storage_unavailable (failing open)"

    async def aclose(self) -> None:
        """Close the Redis connection pool (the memory storage holds nothing to close)."""
        if isinstance(self.storage, RedisStorage):
            bridge: Any = self.storage.bridge  # limits' redis-py bridge holds the client it made
            await bridge.storage.aclose()
