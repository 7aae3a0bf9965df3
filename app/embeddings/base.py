"""The embedder port: texts in, one L2-normalised vector per text out.

The semantic router depends on this Protocol only, so the local model (``minilm.py``) and, later,
a provider's ``/v1/embeddings`` relay are interchangeable. Thresholds are per embedder: cosine
similarities of two models are not on the same scale (docs/routing.md, "Calibration").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

Vectors = NDArray[np.float32]
"""Shape ``(len(texts), dimensions)``, each row of norm 1 (so a dot product is the cosine)."""


class Embedder(Protocol):
    @property
    def name(self) -> str:
        """The model's name, recorded in receipts and part of the policy snapshot."""
        ...

    @property
    def dimensions(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` without blocking the event loop; raise :class:`EmbeddingError` on failure."""
        ...


class EmbeddingError(RuntimeError):
    """The embedder could not produce vectors (model missing, provider failure)."""
