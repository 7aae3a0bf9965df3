"""Tier 0: the rules of the router policy, first match wins.

Besides the winner, the matcher looks for a *runner-up*: a later rule that also matches, routes
somewhere else and whose confidence is within ``min_gap`` of the winner's. Two rules that disagree
with nearly the same confidence are an ambiguous policy, which the guard sends to human review
instead of silently picking the first. Rules that cannot come close enough are not evaluated (a
suffix maximum of confidences bounds the search), so the common case costs one pass at most.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.routing.policy import RoutedRequest, RouterPolicy, Rule

MAX_ROUTED_CHARS = 8000  # rules see at most this much of the message: routing cost stays bounded


@dataclass(frozen=True, slots=True)
class RuleMatch:
    rule: Rule
    params: dict[str, Any]
    runner_up: Rule | None = None

    @property
    def gap(self) -> float | None:
        return None if self.runner_up is None else round(self.rule.confidence - self.runner_up.confidence, 6)


class RuleRouter:
    def __init__(self, policy: RouterPolicy, *, min_gap: float) -> None:
        self.policy = policy
        self.rules = policy.rules
        self.min_gap = min_gap
        # _best_after[i]: the highest confidence among rules[i:] (0 past the end).
        best = [0.0] * (len(self.rules) + 1)
        for i in range(len(self.rules) - 1, -1, -1):
            best[i] = max(self.rules[i].confidence, best[i + 1])
        self._best_after = best

    def match(self, request: RoutedRequest) -> RuleMatch | None:
        rules = self.rules
        for i, rule in enumerate(rules):
            params = rule.match(request)
            if params is None:
                continue
            return RuleMatch(rule, params, self._runner_up(request, rule, i + 1))
        return None

    def _runner_up(self, request: RoutedRequest, winner: Rule, start: int) -> Rule | None:
        # Ambiguous: gap = winner - runner-up < min_gap, i.e. runner-up confidence > floor.
        floor = winner.confidence - self.min_gap
        rules, best = self.rules, self._best_after
        for j in range(start, len(rules)):
            if best[j] <= floor:
                return None  # no later rule is confident enough to make the decision ambiguous
            later = rules[j]
            if later.confidence <= floor or later.target == winner.target:
                continue
            if later.match(request) is not None:
                return later
        return None
