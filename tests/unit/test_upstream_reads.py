"""Reading a stream's lines: linear in the line's size, and capped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.errors import ProviderError
from app.providers.resilience import CircuitBreaker, RetryPolicy, Ticket
from app.providers.upstream import MAX_LINE_BYTES, Upstream, _Relaying


class Pieces:
    """Stands in for aiohttp's response: ``content.readany()`` hands out the pieces, then b""."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.content = self
        self._pieces = pieces

    async def readany(self) -> bytes:
        return next(self._pieces, b"")


def upstream() -> tuple[Upstream, _Relaying]:
    breaker = CircuitBreaker(3, 30, 30)
    up = Upstream(
        provider="openai",
        base_url="http://127.0.0.1:1/v1",
        timeout=5,
        health_timeout=1,
        retry=RetryPolicy(0, 0),
        breaker=breaker,
        network_enabled=False,
    )
    return up, _Relaying(Ticket(breaker))


async def lines_of(pieces: Iterator[bytes]) -> list[bytes]:
    up, relaying = upstream()
    response: Any = Pieces(pieces)
    return [line async for batch in up.line_batches(relaying, response) for line in batch]


async def test_lines_split_across_reads_are_joined() -> None:
    pieces = iter([b"data: a", b"b\r\n\ndata: c\n", b"da", b"ta: d"])
    assert await lines_of(pieces) == [b"data: ab", b"", b"data: c", b"data: d"]


async def test_a_long_line_in_small_pieces_costs_linear_time() -> None:
    """7 MiB in 512-byte reads: adding each piece to what came before copies gigabytes."""
    size, piece = 7 * 2**20, b"x" * 512
    started = time.monotonic()
    [line] = await lines_of(iter([*(piece for _ in range(size // len(piece))), b"\n"]))
    assert len(line) == size
    assert time.monotonic() - started < 3


async def test_a_line_over_the_cap_is_a_bad_answer() -> None:
    piece = b"x" * 2**20
    with pytest.raises(ProviderError) as caught:
        await lines_of(iter([piece] * (MAX_LINE_BYTES // len(piece) + 5)))
    assert caught.value.code == "provider_bad_response" and "MiB" in caught.value.message
    with pytest.raises(ProviderError):  # in one read, ended
        await lines_of(iter([b"y" * (MAX_LINE_BYTES + 1) + b"\nok\n"]))
    with pytest.raises(ProviderError):  # the start of a line, left over from a read
        await lines_of(iter([b"ok\n" + b"y" * (MAX_LINE_BYTES + 1)]))
