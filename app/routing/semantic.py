"""The semantic tier: a message no rule decided, matched to a tool by meaning.

Each tool is described by its texts: ``"<name>: <description>"`` and the example utterances of the
router policy (``semantic.tools.<name>.examples``). They are embedded once, when the policy is
loaded (:meth:`SemanticRouter.load`, at startup: a failure stops the service instead of silently
leaving a tool out); a message costs one forward pass over one or two short segments of it
(:func:`segments`) and a matrix product. A tool's score is its best text's cosine similarity to
either segment.

Only tools the tool policy could run are candidates: one it denies whatever the arguments is not
embedded at all, so it can never be proposed. The nearest tool at or above the threshold is
proposed; its gap to the runner-up (the best *other* tool) goes to the guard, which holds a close
call for human review. A proposed tool is offered to the model, which writes its arguments: a
meaning carries no arguments.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.embeddings.base import Embedder, Vectors
from app.observability.logging import get_logger

log = get_logger("routing")

MAX_CANDIDATES_RECORDED = 5  # the receipt's candidate list: the best few, best first
SEGMENT_CHARS = 300  # each part of a message that is embedded: a sentence or two, under 100 tokens
MAX_SCANNED_CHARS = 8000  # the most of a message searched for its sentences (the rules' window too)
# Where a sentence or a line ends. Python's re: one character class then a fixed lookahead, so it
# cannot backtrack.
_BOUNDARY = re.compile(r"[.?!:;](?=\s)|\n")


def segments(text: str) -> list[str]:
    """The parts of a message that say what it asks for: itself when it is one sentence, else its
    first and its last sentence (or line), each cut to 300 characters.

    A request that carries a text ("Can you summarize the following?" and a pasted report) states
    its intent before or after the text; embedded whole, the text drowns it (0.32 for
    summarize_text against 0.65 for the first line alone, measured) and costs the model's whole
    256-token window (about 130 ms here instead of 10)."""
    text = text[:MAX_SCANNED_CHARS].strip()
    # The text is stripped, so every boundary found has something after it (a mark needs a space
    # after it, a line break is never last).
    ends = [match.end() for match in _BOUNDARY.finditer(text)]
    if not ends:
        return [text[:SEGMENT_CHARS]] if text else []
    head = text[: ends[0]].strip()[:SEGMENT_CHARS]
    tail = text[ends[-1] :].strip()[-SEGMENT_CHARS:]
    return [head] if tail == head else [head, tail]


def tool_text(name: str, description: str) -> str:
    return f"{name}: {description}" if description else name


@dataclass(slots=True)
class SemanticResult:
    """The scores of one message: every candidate tool, best first."""

    candidates: list[tuple[str, float]] = field(default_factory=list)
    min_similarity: float = 0.0
    embedder: str = ""
    latency_ms: float = 0.0
    error: str | None = None
    segments: int = 0  # how many parts of the message were embedded (1 or 2)

    @property
    def top(self) -> tuple[str, float] | None:
        return self.candidates[0] if self.candidates else None

    @property
    def runner_up(self) -> tuple[str, float] | None:
        return self.candidates[1] if len(self.candidates) > 1 else None

    @property
    def gap(self) -> float | None:
        if self.top is None or self.runner_up is None:
            return None
        return round(self.top[1] - self.runner_up[1], 6)

    @property
    def proposed(self) -> str | None:
        """The tool proposed to the guard: the best one, if it reaches the threshold."""
        top = self.top
        return top[0] if top is not None and top[1] >= self.min_similarity else None

    def evidence(self) -> dict[str, Any]:
        """The ``semantic_router`` receipt step (tool names and scores; never the message)."""
        return {
            "embedder": self.embedder,
            "candidates": [
                {"tool": tool, "score": round(score, 4)} for tool, score in self.candidates[:MAX_CANDIDATES_RECORDED]
            ],
            "min_similarity": self.min_similarity,
            "gap": self.gap,
            "proposed": self.proposed,
            "segments": self.segments,
            "latency_ms": self.latency_ms,
            "error": self.error,
        }


class SemanticRouter:
    """Scores a message against the candidate tools' texts with an :class:`Embedder`."""

    def __init__(
        self,
        embedder: Embedder,
        texts: dict[str, list[str]],
        *,
        min_similarity: float,
        min_gap: float,
    ) -> None:
        self.embedder = embedder
        self.texts = {tool: list(values) for tool, values in texts.items() if values}
        self.min_similarity = min_similarity
        self.min_gap = min_gap
        self._owners: list[int] = []
        self._tools: list[str] = list(self.texts)
        self._matrix: Vectors | None = None

    @property
    def tools(self) -> list[str]:
        return list(self._tools)

    @property
    def loaded(self) -> bool:
        return self._matrix is not None

    async def load(self) -> None:
        """Embed every tool text (once per policy load); raises what the embedder raises."""
        flat: list[str] = []
        owners: list[int] = []
        for index, tool in enumerate(self._tools):
            for text in self.texts[tool]:
                flat.append(text)
                owners.append(index)
        started = time.perf_counter()
        matrix = await self.embedder.embed(flat) if flat else np.zeros((0, self.embedder.dimensions), np.float32)
        self._matrix, self._owners = matrix, owners
        log.info(
            "semantic router loaded",
            extra={
                "embedder": self.embedder.name,
                "tools": len(self._tools),
                "texts": len(flat),
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )

    def rank(self, vectors: Vectors) -> list[tuple[str, float]]:
        """Each tool's best similarity to any of ``vectors`` (the message's segments), best first."""
        assert self._matrix is not None, "load() first"
        if not self._tools:
            return []
        similarities = (self._matrix @ vectors.reshape(-1, self._matrix.shape[1]).T).max(axis=1)
        best = np.full(len(self._tools), -1.0, dtype=np.float32)
        np.maximum.at(best, np.asarray(self._owners, dtype=np.int64), similarities)
        order = np.argsort(-best, kind="stable")
        return [(self._tools[i], float(best[i])) for i in order]

    async def score(self, text: str) -> SemanticResult:
        """The candidates for ``text``; an embedder failure is a result with ``error`` set (logged)."""
        result = SemanticResult(min_similarity=self.min_similarity, embedder=self.embedder.name)
        started = time.perf_counter()
        parts = segments(text)
        result.segments = len(parts)
        if parts and self._tools:
            try:
                vectors = await self.embedder.embed(parts)
            except Exception as exc:
                # No decision: the request goes on to the next tier. Logged, and in the receipt.
                log.error("semantic router embedding failed", extra={"error_type": type(exc).__name__})
                result.error = "embedding_failed"
            else:
                result.candidates = self.rank(vectors)
        result.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return result
