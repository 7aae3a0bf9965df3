"""orchestrators: a local-first LLM orchestration service (OpenAI-compatible gateway)."""

__version__ = "0.1.0"
