"""Fast ISO-8601 UTC timestamps for receipts (several per request).

``datetime.now(UTC).isoformat()`` costs about a microsecond; receipts take ``time.time()`` on the
request path and format it here, reusing the date-and-seconds prefix within the same second.
The output is what ``datetime.isoformat()`` gives: ``2026-11-24T12:00:00.123456+00:00``.
"""

from __future__ import annotations

import time

_cached_second = -1
_cached_prefix = ""


def iso_utc(timestamp: float) -> str:
    global _cached_second, _cached_prefix  # noqa: PLW0603 - a one-entry cache
    second = int(timestamp)
    if second != _cached_second:
        _cached_second = second
        _cached_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    micros = int((timestamp - second) * 1_000_000)
    return f"{_cached_prefix}.{micros:06d}+00:00"


def iso_now() -> str:
    return iso_utc(time.time())
