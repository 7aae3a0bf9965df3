"""The routing decision: tier 0 rules, tier 1 the decision cache, the semantic tier, tier 2 the
classifier, one guard.

Decision order (docs/routing.md):

1. Tier 0, the rules. A confident hit decides (a rule with ``review: true`` always goes to a
   human). Without the intent router this is the only tier.
2. Tier 1, the cache of earlier decisions for the same normalised input under the same policy
   hash: confident classifier answers and human resolutions.
3. The semantic tier, when enabled: the nearest tool by meaning (an embedding, no model call).
   It runs in advanced mode with or without the intent router.
4. Tier 2, the classifier (the provider), when enabled.
5. The guard, the same for every tier (the original guarded rule decisions on one path and not on
   the other, so one input behaved two ways): a decision that would act (a tool, an agent, a model)
   below ``ORCH_INTENT_MIN_CONFIDENCE``, or within ``ORCH_INTENT_MIN_GAP`` of a different runner-up,
   is held for human review. Going to the provider is the default action and is never held.
   A semantic score is a cosine similarity, not a probability: its floor and its gap are the
   semantic tier's own (``ORCH_SEMANTIC_ROUTER_MIN_SIMILARITY``, ``ORCH_SEMANTIC_ROUTER_MIN_GAP``).

Arguments for running a tool come only from a rule's regex on *this* message. Cached and
classified decisions carry a route, never arguments (a signature deliberately ignores emails,
phone numbers and secrets, so two different messages may share it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.ids import new_uuid
from app.observability.logging import get_logger
from app.routing.classifier import ProviderClassifier
from app.routing.policy import PROVIDER, RoutedRequest, Target
from app.routing.rules import RuleMatch, RuleRouter
from app.routing.store import IntentCacheStore
from app.scrub import redact_text

if TYPE_CHECKING:  # numpy is imported only when the semantic tier is on
    from app.routing.semantic import SemanticRouter

log = get_logger("routing")

HITL_LOW_CONFIDENCE = "hitl_low_confidence"
HITL_AMBIGUOUS = "hitl_ambiguous"
HITL_REQUIRED = "hitl_required"
SEMANTIC = "semantic"  # the semantic tier's name where tiers are numbers (0 rules, 1 cache, 2 classifier)
SEMANTIC_MATCH = "semantic_match"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SPACES = re.compile(r"\s+")


def signature(text: str) -> str:
    """The cache key of an input: control characters, secrets and personal data removed,
    whitespace collapsed, lower-cased, hashed (first 32 hex digits of SHA-256)."""
    cleaned = _CONTROL.sub(" ", text)
    cleaned = redact_text(cleaned, pii=True)[0]
    cleaned = _SPACES.sub(" ", cleaned).strip().lower()
    return hashlib.sha256(cleaned.encode("utf-8")).hexdigest()[:32]


@dataclass(slots=True)
class Decision:
    """Where a request goes, how sure the router is, and why."""

    target: Target
    tier: int | str | None  # 0 rules, 1 cache, "semantic", 2 classifier; None: nothing matched
    confidence: float
    reason: str
    rule: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    gap: float | None = None
    runner_up: str | None = None
    review_reason: str | None = None  # set when the guard holds the decision for a human
    cacheable: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)
    decision_id: str = field(default_factory=new_uuid)
    # Tool arguments from a rule on this message (a cached/classified tool route reuses them only
    # when the rule proposed the same tool).
    extracted: bool = False

    @property
    def label(self) -> str:
        """What the request ends up doing: a route label, or ``review``."""
        return "review" if self.review_reason else self.target.label

    def as_dict(self, policy_hash: str) -> dict[str, Any]:
        """The ``intent_decision`` exposed with ``?debug=1`` and recorded in the receipt."""
        return {
            "decision_id": self.decision_id,
            "policy_hash": policy_hash,
            "tier_used": self.tier,
            "intent_id": None if self.target == PROVIDER and self.tier is None else self.target.label,
            "route": self.label,
            "rule": self.rule,
            "tool_params": self.params,
            "confidence": self.confidence,
            "gap": self.gap,
            "runner_up": self.runner_up,
            "requires_hitl": self.review_reason is not None,
            "deny_reason": self.review_reason,
            "reason": self.reason,
            "cacheable": self.cacheable,
            "evidence": self.evidence,
        }


NO_MATCH_REASON = "no_match"


def no_match(**evidence: Any) -> Decision:
    return Decision(PROVIDER, None, 0.0, NO_MATCH_REASON, evidence=dict(evidence))


def from_rule(hit: RuleMatch) -> Decision:
    rule = hit.rule
    return Decision(
        rule.target,
        0,
        rule.confidence,
        rule.reason,
        rule=rule.id,
        params=hit.params,
        gap=hit.gap,
        runner_up=hit.runner_up.target.label if hit.runner_up else None,
        extracted=rule.target.kind == "tool",
        evidence={"rules_matched": [rule.id, *([hit.runner_up.id] if hit.runner_up else [])]},
    )


class Guard:
    """The one confidence guard, applied to every decision whatever tier made it."""

    def __init__(self, *, min_confidence: float, min_gap: float) -> None:
        self.min_confidence = min_confidence
        self.min_gap = min_gap

    def check(
        self,
        decision: Decision,
        *,
        review_required: bool = False,
        min_confidence: float | None = None,
        min_gap: float | None = None,
    ) -> str | None:
        """The reason to hold ``decision`` for a human, or None. A tier whose scores are on another
        scale than a rule's confidence (the semantic tier's cosines) passes its own floor and gap."""
        if decision.target.kind == "provider":
            return None  # the default action: nothing to hold
        if review_required:
            return HITL_REQUIRED
        if decision.confidence < (self.min_confidence if min_confidence is None else min_confidence):
            return HITL_LOW_CONFIDENCE
        if decision.gap is not None and decision.gap < (self.min_gap if min_gap is None else min_gap):
            return HITL_AMBIGUOUS
        return None


class IntentRouter:
    """Decides a request's route through the tiers. Pure decision: acting on it is the stage's job."""

    def __init__(
        self,
        rules: RuleRouter,
        guard: Guard,
        *,
        policy_hash: str,
        cache: IntentCacheStore | None = None,
        classifier: ProviderClassifier | None = None,
        semantic: SemanticRouter | None = None,
    ) -> None:
        self.rules = rules
        self.guard = guard
        self.policy_hash = policy_hash
        self.cache = cache
        self.classifier = classifier
        self.semantic = semantic

    def decide_rules(self, request: RoutedRequest) -> Decision:
        """Tier 0 and the guard only (advanced mode without the intent router; the shadow's old path)."""
        hit = self.rules.match(request)
        if hit is None:
            return no_match()
        decision = from_rule(hit)
        decision.review_reason = self.guard.check(decision, review_required=hit.rule.review)
        return decision

    async def decide_local(self, request: RoutedRequest) -> Decision:
        """The tiers that need no database and no model call: the rules, then the semantic tier
        (advanced mode without the intent router)."""
        first = self.decide_rules(request)
        if self.semantic is None or _settled(first):
            return first
        return await self._semantic(request, first if first.tier == 0 else None)

    async def decide(self, request: RoutedRequest) -> Decision:
        """Every tier: rules, then the cache, then the semantic tier, then the classifier, then the guard."""
        first = self.decide_rules(request)
        if _settled(first):
            return first  # a confident rule decides; a rule that always asks a human is not second-guessed
        held = first if first.tier == 0 else None  # a rule hit the guard held: later tiers may settle it
        sig = signature(request.text) if (self.cache or self.classifier) else None
        if self.cache is not None and sig is not None:
            cached = await self._cache_get(sig)
            decision = self._from_cache(cached, held) if cached else None
            if decision is not None:
                return decision
        semantic_evidence: dict[str, Any] = {}
        if self.semantic is not None:
            decision = await self._semantic(request, held)
            if decision.tier == SEMANTIC:
                return decision
            semantic_evidence = {SEMANTIC: decision.evidence[SEMANTIC]}  # no proposal: the scores go on
        if self.classifier is not None and sig is not None:
            decision = await self._classify(request, held)
            if decision is not None:
                if decision.cacheable and self.cache is not None:
                    await self._cache_put(sig, decision_record(decision, source="classifier"))
                decision.evidence.update(semantic_evidence)
                return decision
        if held is not None:
            held.evidence.update(semantic_evidence)
            return held
        return no_match(tiers_consulted=self._consulted(), **semantic_evidence)

    # The cache only saves work: when its database fails, routing goes on without it (logged).
    async def _cache_get(self, sig: str) -> dict[str, Any] | None:
        assert self.cache is not None
        try:
            return await self.cache.get(self.policy_hash, sig)
        except Exception as exc:
            log.error("intent cache read failed", extra={"error_type": type(exc).__name__})
            return None

    async def _cache_put(self, sig: str, record: dict[str, Any]) -> None:
        assert self.cache is not None
        try:
            await self.cache.put(self.policy_hash, sig, record)
        except Exception as exc:
            log.error("intent cache write failed", extra={"error_type": type(exc).__name__})

    def _consulted(self) -> list[int | str]:
        return [
            0,
            *([1] if self.cache else []),
            *([SEMANTIC] if self.semantic else []),
            *([2] if self.classifier else []),
        ]

    async def _semantic(self, request: RoutedRequest, held: Decision | None) -> Decision:
        """The semantic tier's proposal, checked by the guard. Without one: the held rule decision,
        or no match, carrying the scores (``evidence["semantic"]``) so that the receipt shows why."""
        assert self.semantic is not None
        result = await self.semantic.score(request.text)
        evidence: dict[str, Any] = {SEMANTIC: result.evidence()}
        proposed = result.proposed
        if proposed is None:
            if held is not None:
                held.evidence.update(evidence)
                return held
            return no_match(tiers_consulted=self._consulted(), **evidence)
        top, runner = result.top, result.runner_up
        assert top is not None
        if held is not None:
            evidence["rule_proposal"] = held.target.label
        decision = Decision(
            Target("tool", proposed),
            SEMANTIC,
            round(top[1], 6),
            SEMANTIC_MATCH,
            gap=result.gap,
            runner_up=f"tool:{runner[0]}" if runner else None,
            evidence=evidence,
        )
        self._reuse_arguments(decision, held)
        decision.review_reason = self.guard.check(
            decision, min_confidence=self.semantic.min_similarity, min_gap=self.semantic.min_gap
        )
        return decision

    @staticmethod
    def _reuse_arguments(decision: Decision, held: Decision | None) -> None:
        if held is not None and held.target == decision.target and held.extracted:
            decision.params, decision.extracted, decision.rule = held.params, True, held.rule

    def _from_cache(self, record: dict[str, Any], held: Decision | None) -> Decision | None:
        try:
            target = Target.parse(str(record["route"]))
            confidence = float(record["confidence"])
        except (KeyError, TypeError, ValueError):
            return None  # an unreadable entry is a miss
        decision = Decision(
            target,
            1,
            confidence,
            "intent_cache",
            evidence={"cache_hit": True, "source": record.get("source"), "review_id": record.get("review_id")},
        )
        if held is not None:
            decision.evidence["rule_proposal"] = held.target.label
        self._reuse_arguments(decision, held)
        return decision

    async def _classify(self, request: RoutedRequest, held: Decision | None) -> Decision | None:
        assert self.classifier is not None
        result = await self.classifier.classify(request.text)
        evidence: dict[str, Any] = {"classifier": result.evidence()}
        if held is not None:
            evidence["rule_proposal"] = held.target.label
        if result.target is None:
            if held is not None:
                held.evidence.update(evidence)
                return None
            return no_match(tiers_consulted=self._consulted(), **evidence)
        decision = Decision(
            result.target,
            2,
            result.confidence,
            "classifier",
            gap=result.gap,
            runner_up=result.runner_up.label if result.runner_up else None,
            evidence=evidence,
        )
        self._reuse_arguments(decision, held)
        decision.review_reason = self.guard.check(decision)
        decision.cacheable = decision.review_reason is None and decision.confidence >= self.guard.min_confidence
        return decision


def _settled(decision: Decision) -> bool:
    """A confident rule decides; a rule that always asks a human is not second-guessed."""
    return decision.tier == 0 and (decision.review_reason is None or decision.review_reason == HITL_REQUIRED)


def decision_record(decision: Decision, *, source: str, review_id: str | None = None) -> dict[str, Any]:
    """What the cache keeps: a route and a confidence, never arguments."""
    return {
        "route": decision.target.label,
        "confidence": decision.confidence,
        "source": source,
        "review_id": review_id,
        "decision_id": decision.decision_id,
    }
