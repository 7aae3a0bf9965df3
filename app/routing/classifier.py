"""Tier 2: the provider as a classifier for messages no rule decided.

The model is asked to pick one route from a fixed list and answer with one line of JSON; it runs
at temperature 0 with a fixed seed and a small output budget. Anything else than a well-formed
answer naming a listed route is no decision (the request then goes on as if tier 2 were off), so
a confused or manipulated model can only *propose* one of the policy's own routes, which the
confidence guard still checks. A tool proposed here is only offered to the model, never run
directly: arguments for a direct run come only from a rule's regex (tier 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.errors import OrchestratorError
from app.providers.base import LLMProvider, ProviderRequest
from app.routing.policy import Target

PROMPT_VERSION = 1  # part of the policy snapshot: changing the prompt invalidates cached decisions
MAX_CLASSIFIED_CHARS = 2000  # the classifier sees at most this much of the message
MAX_ANSWER_TOKENS = 80

SYSTEM_PROMPT = """You route requests. Pick the one route from the list that fits the user's message best.
Routes:
{routes}
Answer with exactly one line of JSON and nothing else, in this form:
{{"route": "<a route from the list>", "confidence": <0 to 1>, "runner_up": "<another route from the list>", \
"runner_up_confidence": <0 to 1>}}"""


@dataclass(slots=True)
class Classification:
    target: Target | None = None
    confidence: float = 0.0
    runner_up: Target | None = None
    runner_up_confidence: float | None = None
    error: str | None = None
    latency_ms: float = 0.0
    candidates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def gap(self) -> float | None:
        if self.runner_up is None or self.runner_up_confidence is None:
            return None
        return round(self.confidence - self.runner_up_confidence, 6)

    def evidence(self) -> dict[str, Any]:
        return {
            "route": self.target.label if self.target else None,
            "confidence": self.confidence,
            "runner_up": self.runner_up.label if self.runner_up else None,
            "runner_up_confidence": self.runner_up_confidence,
            "error": self.error,
            "latency_ms": self.latency_ms,
        }


def _score(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0.0 <= value <= 1.0 else None


def parse_answer(text: str, labels: dict[str, Target]) -> Classification:
    """The model's answer -> a classification, or one with ``error`` set."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return Classification(error="classifier_unparseable")
    try:
        data = orjson.loads(text[start : end + 1])
    except orjson.JSONDecodeError:
        return Classification(error="classifier_unparseable")
    if not isinstance(data, dict):
        return Classification(error="classifier_unparseable")
    route, confidence = data.get("route"), _score(data.get("confidence"))
    if not isinstance(route, str) or route.strip().lower() not in labels:
        return Classification(error="classifier_unknown_route")
    if confidence is None:
        return Classification(error="classifier_bad_confidence")
    result = Classification(target=labels[route.strip().lower()], confidence=confidence)
    runner, runner_confidence = data.get("runner_up"), _score(data.get("runner_up_confidence"))
    if isinstance(runner, str) and runner.strip().lower() in labels and runner_confidence is not None:
        runner_target = labels[runner.strip().lower()]
        if runner_target != result.target:
            result.runner_up, result.runner_up_confidence = runner_target, runner_confidence
    return result


class ProviderClassifier:
    """Asks the configured provider to classify a message into one of the policy's routes."""

    def __init__(self, provider: LLMProvider, *, model: str, labels: dict[str, str]) -> None:
        self.provider = provider
        self.model = model
        self.descriptions = labels
        self.targets = {label.lower(): Target.parse(label) for label in labels}
        routes = "\n".join(f"- {label}: {description}" for label, description in labels.items())
        self.system_prompt = SYSTEM_PROMPT.format(routes=routes)

    async def classify(self, text: str) -> Classification:
        request = ProviderRequest(
            model=self.model,
            messages=[
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": text[:MAX_CLASSIFIED_CHARS]},
            ],
            options={"temperature": 0, "seed": 0, "max_tokens": MAX_ANSWER_TOKENS},
        )
        started = time.perf_counter()
        try:
            completion = await self.provider.complete(request)
        except OrchestratorError as exc:
            result = Classification(error=f"classifier_failed:{exc.code or exc.type}")
        else:
            result = parse_answer(completion.content or "", self.targets)
        result.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return result
