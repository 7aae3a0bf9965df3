"""The real local embedding model, loaded once per test session (about 1.5 s)."""

from __future__ import annotations

import functools

from app.embeddings.minilm import MiniLM


@functools.cache
def local_model() -> MiniLM:
    return MiniLM()
