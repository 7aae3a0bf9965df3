"""Build the configured provider: demo unless ORCH_LLM_ENABLED=1, else Ollama or OpenAI-compatible."""

from __future__ import annotations

from app.providers.base import LLMProvider
from app.providers.demo import DEMO_MODEL, DemoProvider
from app.providers.ollama import OllamaProvider
from app.providers.openai_compat import OpenAICompatProvider
from app.providers.resilience import CircuitBreaker, RetryPolicy
from app.providers.upstream import Upstream
from app.settings import Settings


def build_provider(settings: Settings) -> tuple[LLMProvider, str]:
    """The provider and the model used when a request names none."""
    if not settings.llm_enabled or settings.llm_provider == "demo":
        return DemoProvider(), DEMO_MODEL
    headers: dict[str, str] = {}
    if settings.llm_provider == "openai":
        base_url = settings.openai_base_url
        key = settings.openai_api_key.get_secret_value()
        if key:
            headers["Authorization"] = f"Bearer {key}"
    else:
        base_url = settings.ollama_url
    upstream = Upstream(
        provider=settings.llm_provider,
        base_url=base_url,
        headers=headers,
        timeout=settings.llm_timeout_sec,
        health_timeout=settings.llm_health_timeout_sec,
        retry=RetryPolicy(settings.llm_retry_count, settings.llm_retry_backoff_sec),
        breaker=CircuitBreaker(
            settings.llm_circuit_max_failures,
            settings.llm_circuit_reset_sec,
            # A half-open probe gets as long as any request to show the upstream answers.
            probe_seconds=settings.llm_timeout_sec,
        ),
        network_enabled=settings.llm_network_enabled,
    )
    provider: LLMProvider = (
        OpenAICompatProvider(upstream) if settings.llm_provider == "openai" else OllamaProvider(upstream)
    )
    return provider, settings.model_chat
