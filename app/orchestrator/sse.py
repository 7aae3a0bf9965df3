"""Server-sent events for streamed chat completions (DESIGN.md, convention 4).

One ``data: <chunk json>`` per delta, all chunks with the same id, the first delta carrying the
role, a usage chunk with empty ``choices`` when asked for, then ``data: [DONE]``. A failure after
the first byte is sent in-band as ``data: {"error": {...}}`` followed by ``[DONE]``.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.errors import OrchestratorError

DONE = b"data: [DONE]\n\n"

# Sent with every streamed response: no caching, and no buffering by reverse proxies (nginx).
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class ChunkWriter:
    """Encodes the chunks of one completion (same id, created and model on every chunk)."""

    __slots__ = ("_head", "_started")

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        # The constant prefix of every chunk, serialised once.
        self._head: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._started: set[int] = set()  # choices whose first delta (with the role) went out

    def fingerprint(self, value: str) -> None:
        """The upstream's ``system_fingerprint``: on every chunk from now on."""
        self._head["system_fingerprint"] = value

    def delta(
        self,
        *,
        content: str | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
        finish_reason: str | None = None,
        extra: dict[str, Any] | None = None,
        index: int = 0,
        logprobs: dict[str, Any] | None = None,
    ) -> bytes:
        delta: dict[str, Any] = {}
        if index not in self._started:
            delta["role"] = "assistant"
            self._started.add(index)
        if content is not None:
            delta["content"] = content
        if tool_calls is not None:
            delta["tool_calls"] = tool_calls
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish_reason}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        chunk: dict[str, Any] = {**self._head, "choices": [choice]}
        if extra:
            chunk.update(extra)
        return event(chunk)

    def usage(self, usage: dict[str, Any]) -> bytes:
        return event({**self._head, "choices": [], "usage": usage})

    @staticmethod
    def error(error: OrchestratorError) -> bytes:
        return event(error.envelope())
