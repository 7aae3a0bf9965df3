"""The golden set: prompts with the route the policy must give them, and how well it does.

Used by the test that holds the shipped policy to 100% (tests/unit/test_golden_routes.py) and by
``make routing-report`` (scripts/routing_report.py), which prints accuracy and a confusion table
for any policy, so a rule can be tried against the set before it ships.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.policy_files import PolicyFileError, describe, read_yaml_mapping
from app.routing.intent import SEMANTIC, IntentRouter
from app.routing.policy import RoutedRequest, Target


class GoldenCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    route: str  # provider | tool:<name> | model:<name> | agent:<name> | review
    args: dict[str, Any] | None = None  # expected tool arguments (tool routes)
    model: str | None = None  # the requested model
    metadata: dict[str, str] = Field(default_factory=dict)
    # The tier the case tests: "rules" (commands and their look-alikes) or "semantic" (paraphrases
    # of a tool's purpose, near-misses that must still go to the model, close calls for review).
    tier: Literal["rules", "semantic"] = "rules"
    note: str = ""

    def expected(self) -> str:
        return self.route if self.route == "review" else Target.parse(self.route).label


class GoldenSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    cases: list[GoldenCase] = Field(min_length=1)


def load_golden(path: Path) -> list[GoldenCase]:
    try:
        return GoldenSet.model_validate(read_yaml_mapping(path, flag="golden set")).cases
    except ValidationError as exc:
        raise PolicyFileError(f"golden set: {path}: {describe(exc)}") from None


@dataclass(slots=True)
class Outcome:
    case: GoldenCase
    got: str
    args: dict[str, Any]
    score: float | None = None  # the semantic tier's best score, when it was consulted

    @property
    def route_ok(self) -> bool:
        return self.got == self.case.expected()

    @property
    def ok(self) -> bool:
        return self.route_ok and (self.case.args is None or self.case.args == self.args)


@dataclass(slots=True)
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def correct(self) -> int:
        return sum(outcome.ok for outcome in self.outcomes)

    @property
    def accuracy(self) -> float:
        return self.correct / len(self.outcomes) if self.outcomes else 0.0

    @property
    def failures(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    def confusion(self) -> Counter[tuple[str, str]]:
        return Counter((outcome.case.expected(), outcome.got) for outcome in self.outcomes)

    def semantic_margins(self) -> tuple[float, float] | None:
        """The semantic tier's calibration: the lowest best-score of a case that must reach a tool
        and the highest of one that must go to the model (None without both kinds of cases)."""
        tools = [o.score for o in self.outcomes if o.score is not None and o.case.expected().startswith("tool:")]
        model = [o.score for o in self.outcomes if o.score is not None and o.case.expected() == "provider"]
        return (min(tools), max(model)) if tools and model else None

    def by_tier(self) -> dict[str, tuple[int, int]]:
        """(correct, total) per tier the cases test."""
        tiers: dict[str, tuple[int, int]] = {}
        for outcome in self.outcomes:
            correct, total = tiers.get(outcome.case.tier, (0, 0))
            tiers[outcome.case.tier] = (correct + outcome.ok, total + 1)
        return tiers

    def render(self) -> str:
        labels = sorted({label for pair in self.confusion() for label in pair})
        counts = self.confusion()
        width = max([len("expected \\ got"), *(len(label) for label in labels)])
        cell = max(5, *(len(label) for label in labels))
        lines = [f"Golden cases: {len(self.outcomes)}, correct: {self.correct}, accuracy: {self.accuracy:.1%}"]
        for tier, (correct, total) in sorted(self.by_tier().items()):
            lines.append(f"  tier {tier}: {total} cases, correct: {correct}, accuracy: {correct / total:.1%}")
        margins = self.semantic_margins()
        if margins is not None:
            lowest, highest = margins
            lines.append(
                f"  semantic scores: lowest of a case for a tool {lowest:.3f}, highest of a case for the model "
                f"{highest:.3f} (the threshold belongs between them)"
            )
        lines += [
            "",
            "expected \\ got".ljust(width) + " " + " ".join(label.rjust(cell) for label in labels),
        ]
        for expected in labels:
            row = [str(counts.get((expected, got), 0) or ".").rjust(cell) for got in labels]
            lines.append(expected.ljust(width) + " " + " ".join(row))
        if self.failures:
            lines += ["", "Misrouted:"]
            for outcome in self.failures:
                wrong_args = outcome.route_ok and outcome.case.args is not None
                detail = f"args {outcome.args} != {outcome.case.args}" if wrong_args else f"got {outcome.got}"
                if outcome.score is not None:
                    detail += f" (semantic score {outcome.score:.3f})"
                lines.append(f"  {outcome.case.prompt!r}: expected {outcome.case.expected()}, {detail}")
        return "\n".join(lines)


def evaluate(router: IntentRouter, cases: list[GoldenCase]) -> Report:
    """Route every case through the tiers that need no database and no model call: the rules and
    the guard, then (for the semantic cases) the semantic tier when the router has one."""
    return asyncio.run(evaluate_async(router, cases))


async def evaluate_async(router: IntentRouter, cases: list[GoldenCase]) -> Report:
    report = Report()
    for case in cases:
        request = RoutedRequest(case.prompt, case.model, {k.lower(): v for k, v in case.metadata.items()})
        # A rules case says what the rules (and the guard) do; a semantic case what the message
        # becomes when the semantic tier follows them, as in the service.
        decision = router.decide_rules(request) if case.tier == "rules" else await router.decide_local(request)
        semantic = decision.evidence.get(SEMANTIC)
        candidates = semantic.get("candidates") if semantic else None
        score = float(candidates[0]["score"]) if candidates else None
        report.outcomes.append(Outcome(case, decision.label, decision.params, score))
    return report
