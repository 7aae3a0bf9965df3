"""The decision tiers and the one guard: rules, cache, classifier, in that order, with the same
confidence and gap checks whatever tier decided (the original guarded one path and not the other)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.agents.registry import load_agents
from app.db.connection import SqliteDatabase
from app.errors import ProviderError
from app.providers.base import Completion, ProviderRequest
from app.routing.classifier import ProviderClassifier, parse_answer
from app.routing.intent import (
    HITL_AMBIGUOUS,
    HITL_LOW_CONFIDENCE,
    HITL_REQUIRED,
    Guard,
    IntentRouter,
    decision_record,
    signature,
)
from app.routing.policy import RoutedRequest, Target, parse_policy
from app.routing.rules import RuleRouter
from app.routing.store import IntentCacheStore
from app.settings import SHIPPED_AGENT_DIR

AGENTS = load_agents(SHIPPED_AGENT_DIR)
RULES = [
    {"id": "calc", "when": {"message": r"^calc (?P<expression>[\d+ ]+)$"}, "target": {"tool": "safe_calc"}},
    {"id": "weak", "when": {"keywords": ["maybe"]}, "target": {"tool": "echo"}, "confidence": 0.6},
    {"id": "ask", "when": {"keywords": ["deploy"]}, "target": {"agent": "holly"}, "review": True},
    {"id": "weak-calc", "when": {"message": r"^sum (?P<expression>[\d+ ]+)$"}, "target": {"tool": "safe_calc"},
     "confidence": 0.5},
    {"id": "chat", "when": {"keywords": ["chitchat"]}, "target": {"provider": True}, "confidence": 0.1},
    {"id": "a", "when": {"keywords": ["both"]}, "target": {"tool": "x"}, "confidence": 0.9},
    {"id": "b", "when": {"keywords": ["both"]}, "target": {"tool": "y"}, "confidence": 0.88},
]  # fmt: skip
POLICY = parse_policy({"rules": RULES}, agents=AGENTS)
LABELS = {label: Target.parse(label) for label in POLICY.labels()}


class ScriptedProvider:
    """A provider double: answers the classifier with scripted text and records what it was asked."""

    name = "scripted"

    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[ProviderRequest] = []

    async def complete(self, request: ProviderRequest) -> Completion:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return Completion(content=answer, model=request.model)

    def stream(self, request: ProviderRequest) -> AsyncIterator[Any]:
        raise NotImplementedError

    async def list_models(self) -> list[Any]:
        return []

    async def health(self) -> Any:
        return None

    async def aclose(self) -> None:
        return None


def router(*, cache: IntentCacheStore | None = None, provider: ScriptedProvider | None = None) -> IntentRouter:
    classifier = ProviderClassifier(provider, model="m", labels=POLICY.labels()) if provider else None  # type: ignore[arg-type]
    return IntentRouter(
        RuleRouter(POLICY, min_gap=0.05),
        Guard(min_confidence=0.85, min_gap=0.05),
        policy_hash="hash-1",
        cache=cache,
        classifier=classifier,
    )


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[IntentCacheStore]:
    db = await SqliteDatabase(tmp_path / "cache.db").open()
    store = IntentCacheStore(db, ttl_seconds=600)
    await store.migrate()
    yield store
    await db.close()


def req(text: str) -> RoutedRequest:
    return RoutedRequest(text)


def test_the_guard_is_the_same_for_every_decision() -> None:
    r = router()
    confident = r.decide_rules(req("calc 2 + 2"))
    assert (confident.label, confident.tier, confident.params) == ("tool:safe_calc", 0, {"expression": "2 + 2"})
    assert r.decide_rules(req("maybe repeat this")).review_reason == HITL_LOW_CONFIDENCE
    assert r.decide_rules(req("deploy now")).review_reason == HITL_REQUIRED
    ambiguous = r.decide_rules(req("both"))
    assert ambiguous.review_reason == HITL_AMBIGUOUS and ambiguous.runner_up == "tool:y"
    assert ambiguous.gap == pytest.approx(0.02)
    # going to the provider is never held, however low the rule's confidence
    chat = r.decide_rules(req("chitchat please"))
    assert chat.label == "provider" and chat.review_reason is None and chat.tier == 0
    nothing = r.decide_rules(req("hello"))
    assert nothing.label == "provider" and nothing.tier is None and nothing.reason == "no_match"


def test_signature_ignores_secrets_personal_data_case_and_spacing() -> None:
    assert signature("Email alice@example.com now") == signature("email  bob@example.org NOW")
    assert signature("key sk-" + "a" * 24) == signature("key sk-" + "b" * 24)
    assert signature("call 555-123-4567\x00") == signature("call 555-987-6543")
    assert signature("calc 2 + 2") != signature("calc 3 + 3")
    assert len(signature("x")) == 32


async def test_a_confident_rule_decides_before_the_cache_and_the_classifier(cache: IntentCacheStore) -> None:
    provider = ScriptedProvider()
    decision = await router(cache=cache, provider=provider).decide(req("calc 1 + 1"))
    assert decision.tier == 0 and provider.requests == []
    # a review-required rule is not second-guessed by later tiers either
    held = await router(cache=cache, provider=provider).decide(req("deploy"))
    assert held.review_reason == HITL_REQUIRED and provider.requests == []


async def test_tier_2_classifies_then_tier_1_remembers_it(cache: IntentCacheStore) -> None:
    provider = ScriptedProvider('{"route": "agent:holly", "confidence": 0.97, "runner_up": "provider", '
                                '"runner_up_confidence": 0.2}')  # fmt: skip
    r = router(cache=cache, provider=provider)
    first = await r.decide(req("Please help me plan my week"))
    assert (first.label, first.tier, first.confidence, first.gap) == ("agent:holly", 2, 0.97, pytest.approx(0.77))
    assert first.cacheable and first.evidence["classifier"]["route"] == "agent:holly"
    asked = provider.requests[0]
    assert asked.options == {"temperature": 0, "seed": 0, "max_tokens": 80}
    assert "- agent:holly:" in asked.messages[0]["content"] and "- provider:" in asked.messages[0]["content"]
    assert asked.messages[1] == {"role": "user", "content": "Please help me plan my week"}
    second = await r.decide(req("please  help me PLAN my week"))  # same signature
    assert (second.label, second.tier, second.evidence["cache_hit"]) == ("agent:holly", 1, True)
    assert len(provider.requests) == 1  # not asked again
    # another policy hash does not see the entry
    other = IntentRouter(r.rules, r.guard, policy_hash="hash-2", cache=cache)
    assert (await other.decide(req("Please help me plan my week"))).tier is None


async def test_an_unsure_classifier_is_held_and_not_cached(cache: IntentCacheStore) -> None:
    provider = ScriptedProvider(
        '{"route": "tool:echo", "confidence": 0.6}',
        '{"route": "tool:x", "confidence": 0.9, "runner_up": "tool:y", "runner_up_confidence": 0.88}',
        '{"route": "provider", "confidence": 0.3}',
    )
    r = router(cache=cache, provider=provider)
    low = await r.decide(req("first message"))
    assert low.review_reason == HITL_LOW_CONFIDENCE and not low.cacheable
    close = await r.decide(req("second message"))
    assert close.review_reason == HITL_AMBIGUOUS
    unsure_chat = await r.decide(req("third message"))
    assert unsure_chat.label == "provider" and unsure_chat.review_reason is None and not unsure_chat.cacheable
    assert await cache.count() == 0


async def test_a_held_rule_keeps_its_arguments_when_a_later_tier_agrees(cache: IntentCacheStore) -> None:
    provider = ScriptedProvider('{"route": "tool:safe_calc", "confidence": 0.95}')
    decision = await router(cache=cache, provider=provider).decide(req("sum 2 + 3"))
    assert decision.tier == 2 and decision.label == "tool:safe_calc"
    assert decision.extracted and decision.params == {"expression": "2 + 3"} and decision.rule == "weak-calc"
    # a cached route for another message with no rule hit carries no arguments
    await cache.put("hash-1", signature("add two and three"), decision_record(decision, source="classifier"))
    cached = await router(cache=cache).decide(req("add two and three"))
    assert cached.tier == 1 and cached.label == "tool:safe_calc" and not cached.extracted and cached.params == {}


async def test_a_failing_or_unparseable_classifier_is_no_decision(cache: IntentCacheStore) -> None:
    provider = ScriptedProvider(ProviderError("down"), "I think it is math!", '{"route": "tool:rm", "confidence": 1}')
    r = router(cache=cache, provider=provider)
    failed = await r.decide(req("one"))
    assert failed.label == "provider" and failed.tier is None
    assert failed.evidence["classifier"]["error"] == "classifier_failed:provider_error"
    assert (await r.decide(req("two"))).evidence["classifier"]["error"] == "classifier_unparseable"
    assert (await r.decide(req("three"))).evidence["classifier"]["error"] == "classifier_unknown_route"
    # with a held rule proposal, a failed classifier leaves the rule's (held) decision
    held = await router(cache=cache, provider=ScriptedProvider("nonsense")).decide(req("maybe"))
    assert held.review_reason == HITL_LOW_CONFIDENCE and held.rule == "weak"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"route": "provider", "confidence": 0.9}', ("provider", 0.9, None)),
        ('Sure! {"route": "TOOL:SAFE_CALC", "confidence": 1} hope that helps', ("tool:safe_calc", 1.0, None)),
        ('{"route": "tool:rm_rf", "confidence": 1}', (None, None, "classifier_unknown_route")),
        ('{"route": "tool:safe_calc", "confidence": 1}', ("tool:safe_calc", 1.0, None)),
        ('{"route": "provider", "confidence": 1.5}', (None, None, "classifier_bad_confidence")),
        ('{"route": "provider", "confidence": true}', (None, None, "classifier_bad_confidence")),
        ('["provider"]', (None, None, "classifier_unparseable")),
        ("", (None, None, "classifier_unparseable")),
    ],
)
def test_classifier_answers_are_parsed_strictly(text: str, expected: tuple[Any, Any, Any]) -> None:
    result = parse_answer(text, LABELS)
    label = result.target.label if result.target else None
    assert (label, result.confidence if result.target else None, result.error) == expected


def test_a_runner_up_equal_to_the_choice_is_ignored() -> None:
    result = parse_answer('{"route": "provider", "confidence": 0.9, "runner_up": "provider", '
                          '"runner_up_confidence": 0.9}', LABELS)  # fmt: skip
    assert result.runner_up is None and result.gap is None
