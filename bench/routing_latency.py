"""Routing decision latency, in process: the shipped policy plus generated rules (200 by default),
the golden-set prompts routed through the deterministic tiers (rules, runner-up search, guard).

    python bench/routing_latency.py [RULES]

Prints p50/p99 per decision for all prompts, for prompts no rule matches (every rule is tried)
and for prompts a rule decides. Target: p50 under 0.2 ms with 200 rules.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from app.agents.registry import load_agents
from app.routing.golden import load_golden
from app.routing.intent import Guard, IntentRouter
from app.routing.policy import RoutedRequest, parse_policy
from app.routing.rules import RuleRouter
from app.settings import SHIPPED_AGENT_DIR, SHIPPED_ROUTER_POLICY

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 200  # each prompt is routed this many times

TOPICS = [
    "invoice", "refund", "password reset", "shipping", "warranty", "pricing", "discount", "calendar",
    "weather", "translate", "recipe", "flight", "hotel", "taxi", "train", "insurance", "mortgage",
    "payroll", "vacation", "benefits", "laptop", "printer", "vpn", "wifi", "license",
]  # fmt: skip


def generated_rules(count: int) -> list[dict[str, Any]]:
    """A realistic mix: keyword rules, anchored command regexes, free regexes, metadata rules."""
    rules: list[dict[str, Any]] = []
    for n in range(count):
        topic = TOPICS[n % len(TOPICS)]
        word = f"{topic.split()[0]}{n}"
        kind = n % 4
        if kind == 0:
            when: dict[str, Any] = {"keywords": [word, f"{topic} {n}"]}
        elif kind == 1:
            when = {"message": rf"^\s*(?:/|!){word}\s+(?P<arg>\S.*)$"}
        elif kind == 2:
            when = {"message": rf"\b(?:{word}|{topic}-{n})\b", "unless": r"\bnot\b"}
        else:
            when = {"metadata": {"team": f"team-{n}"}, "keywords": [word]}
        target = {"tool": f"tool_{n}"} if kind != 3 else {"agent": "holly"}
        rules.append({"id": f"generated.{n}", "when": when, "target": target, "confidence": 0.9})
    return rules


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    agents = load_agents(SHIPPED_AGENT_DIR)
    data = yaml.safe_load(SHIPPED_ROUTER_POLICY.read_text())
    data["rules"] = data["rules"] + generated_rules(count)
    policy = parse_policy(data, agents=agents)
    router = IntentRouter(RuleRouter(policy, min_gap=0.05), Guard(min_confidence=0.85, min_gap=0.05), policy_hash="")
    cases = load_golden(ROOT / "tests" / "golden_routes.yaml")
    requests = [(c.prompt, c.model, {k.lower(): v for k, v in c.metadata.items()}) for c in cases]
    timings: dict[str, list[float]] = {"all": [], "no rule matches": [], "a rule decides": []}
    for _ in range(ROUNDS // 10):  # warm-up
        for text, model, metadata in requests:
            router.decide_rules(RoutedRequest(text, model, metadata))
    clock = time.perf_counter_ns
    for _ in range(ROUNDS):
        for text, model, metadata in requests:
            started = clock()
            # A fresh RoutedRequest each time: preparing the message is part of the decision.
            decision = router.decide_rules(RoutedRequest(text, model, metadata))
            elapsed = (clock() - started) / 1e6
            timings["all"].append(elapsed)
            timings["a rule decides" if decision.tier == 0 else "no rule matches"].append(elapsed)
    print(f"\n== routing decision latency, in process ({len(policy.rules)} rules: shipped + {count} generated)")
    print(f"{'prompts':<18} {'decisions':>10} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    for name, values in timings.items():
        print(
            f"{name:<18} {len(values):>10} {percentile(values, 0.5):>9.4f} {percentile(values, 0.99):>9.4f}"
            f" {statistics.fmean(values):>9.4f}"
        )
    print("target: p50 < 0.2 ms")


if __name__ == "__main__":
    main()
