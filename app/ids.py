"""Identifiers: unique, not secret, and cheap (one per request on the hot path).

``uuid.uuid4()`` asks the kernel for 16 random bytes on every call; these ids only need to be
unique, so they come from a PRNG seeded from the OS (``random.SystemRandom`` for the seed) at import
and again in a child process forked after it.
None of them is used as a credential.
"""

from __future__ import annotations

import os
import random
import time

_random = random.Random(random.SystemRandom().getrandbits(256))  # noqa: S311 - uniqueness, not secrecy

_VERSION_4 = (0x4 << 76) | (0x2 << 62)  # version and RFC 4122 variant bits of a UUID4
_MASK = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)


def _reseed() -> None:
    # A child forked after import (gunicorn --preload, multiprocessing) would otherwise carry on
    # the parent's sequence: workers would make the same trace ids in the same millisecond, and the
    # receipt batch holding the second would fail to commit (the id is the traces' primary key).
    _random.seed(random.SystemRandom().getrandbits(256))


os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """32 hex characters (request ids, completion ids)."""
    return f"{_random.getrandbits(128):032x}"


def new_uuid() -> str:
    """A random (version 4) UUID string."""
    h = f"{(_random.getrandbits(128) & _MASK) | _VERSION_4:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_time_uuid() -> str:
    """A time-ordered (version 7, RFC 9562) UUID string: 48 bits of Unix milliseconds, then random.

    Trace ids use it: rows keyed by them are appended at the end of their indexes instead of at
    random places, which keeps receipt writes cheap as the tables grow.
    """
    value = (time.time_ns() // 1_000_000) << 80 | _random.getrandbits(80)
    value = (value & ~(0xF << 76) & ~(0x3 << 62)) | (0x7 << 76) | (0x2 << 62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def time_uuid_ceiling(at_ns: int) -> str:
    """The greatest time-ordered UUID string of the millisecond ``at_ns`` falls in (what it sorts
    before, as text, is every trace id made up to then)."""
    h = f"{at_ns // 1_000_000:012x}"
    return f"{h[:8]}-{h[8:12]}-ffff-ffff-ffffffffffff"
