"""The offline demo provider: a deterministic canned answer, streamed word by word.

It is the default, so that the service is usable (and testable) with no model at all. The answer
is a pure function of the request: the same messages always give the same reply.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from app.providers.base import (
    Completion,
    ModelCard,
    ProviderHealth,
    ProviderRequest,
    StreamDelta,
    Usage,
)

DEMO_MODEL = "orchestrators-demo"
DEMO_HEADER = "[ORCHESTRATORS_V2 demo mode]"
_QUOTE_CHARS = 200  # how much of the user's message the reply quotes back
_WORD = re.compile(r"\S+\s*|\s+")


def _estimate_tokens(text: str) -> int:
    """A rough token count (about four characters per token), never zero for non-empty text."""
    return (len(text) + 3) // 4


def _last_user_text(request: ProviderRequest) -> str:
    for message in reversed(request.messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _heuristic_intent(text: str) -> str:
    lowered = text.lower()
    if "calc" in lowered:
        return "safe_calc"
    if "echo" in lowered:
        return "echo"
    return "chat" if lowered.strip() else "unknown"


def demo_reply(request: ProviderRequest) -> str:
    text = " ".join(_last_user_text(request).split())
    quoted = text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."
    return (
        f"{DEMO_HEADER} No language model is configured, so this is a deterministic demo reply.\n"
        f'You said: "{quoted}"\n'
        f"Intent (heuristic): {_heuristic_intent(text)}\n"
        "To answer with a real model, set ORCH_LLM_ENABLED=1 and ORCH_LLM_PROVIDER=ollama or openai."
    )


def _choices(request: ProviderRequest) -> int:
    n = request.options.get("n")
    return n if isinstance(n, int) and n > 1 else 1


class DemoProvider:
    """Implements :class:`app.providers.base.LLMProvider` without any I/O."""

    name = "demo"

    def _usage(self, request: ProviderRequest, reply: str) -> Usage:
        prompt = sum(_estimate_tokens(str(m.get("content") or "")) for m in request.messages)
        return Usage(prompt_tokens=prompt, completion_tokens=len(reply.split()))

    async def complete(self, request: ProviderRequest) -> Completion:
        reply = demo_reply(request)
        n = _choices(request)
        usage = self._usage(request, reply)
        usage.completion_tokens *= n
        others = [Completion(content=reply, model=DEMO_MODEL) for _ in range(n - 1)]
        return Completion(content=reply, model=DEMO_MODEL, usage=usage, others=others)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        reply = demo_reply(request)
        n = _choices(request)
        for index in range(n):  # n > 1: the same deterministic reply for every choice
            for word in _WORD.findall(reply):
                # Word by word, all at once: `more` lets the relay write them to the client together.
                yield StreamDelta(content=word, more=True, index=index)
            yield StreamDelta(finish_reason="stop", more=index < n - 1, index=index)
        usage = self._usage(request, reply)
        usage.completion_tokens *= n
        yield StreamDelta(usage=usage)

    async def list_models(self) -> list[ModelCard]:
        return [ModelCard(id=DEMO_MODEL, owned_by="orchestrators")]

    async def health(self) -> ProviderHealth:
        return ProviderHealth(ok=True)

    async def aclose(self) -> None:
        return None
