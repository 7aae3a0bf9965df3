"""`make routing-report`: how the router policy routes the golden set (accuracy, confusion table).

    python scripts/routing_report.py                       # the shipped policy and agents
    python scripts/routing_report.py --policy my_policy.yaml --agents my_agents/ --golden my_cases.yaml
    python scripts/routing_report.py --strict              # exit 1 unless every case is routed right

Only the deterministic tiers run (the rules and the confidence guard): no model, no database.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.agents.registry import load_agents
from app.policy_files import PolicyFileError
from app.routing.golden import evaluate, load_golden
from app.routing.intent import Guard, IntentRouter
from app.routing.policy import load_router_policy
from app.routing.rules import RuleRouter
from app.settings import SHIPPED_AGENT_DIR, SHIPPED_ROUTER_POLICY

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=SHIPPED_ROUTER_POLICY, help="router policy YAML")
    parser.add_argument("--agents", type=Path, default=SHIPPED_AGENT_DIR, help="agent directory")
    parser.add_argument("--golden", type=Path, default=ROOT / "tests" / "golden_routes.yaml", help="golden set")
    parser.add_argument("--min-confidence", type=float, default=0.85, help="ORCH_INTENT_MIN_CONFIDENCE")
    parser.add_argument("--min-gap", type=float, default=0.05, help="ORCH_INTENT_MIN_GAP")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any case is misrouted")
    args = parser.parse_args()
    try:
        agents = load_agents(args.agents)
        policy = load_router_policy(args.policy, agents=agents)
        cases = load_golden(args.golden)
    except PolicyFileError as exc:
        print(f"routing-report: {exc}", file=sys.stderr)
        return 2
    router = IntentRouter(
        RuleRouter(policy, min_gap=args.min_gap),
        Guard(min_confidence=args.min_confidence, min_gap=args.min_gap),
        policy_hash="",
    )
    report = evaluate(router, cases)
    print(f"Policy: {args.policy} ({len(policy.rules)} rules), agents: {args.agents} ({len(agents)})")
    print(f"Golden set: {args.golden}")
    print(report.render())
    return 1 if args.strict and report.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
