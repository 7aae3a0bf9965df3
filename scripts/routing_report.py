"""`make routing-report`: how the router policy routes the golden set (accuracy per tier, confusion table).

    python scripts/routing_report.py                       # the shipped policy, agents and tool policy
    python scripts/routing_report.py --policy my_policy.yaml --agents my_agents/ --golden my_cases.yaml
    python scripts/routing_report.py --min-similarity 0.45 # try another semantic threshold
    python scripts/routing_report.py --no-semantic         # the rules and the guard only
    python scripts/routing_report.py --strict              # exit 1 unless every case is routed right

The tiers that need no database and no model call run: the rules, the semantic tier (the local
embedding model, `make embed-model`; candidates are the tools the tool policy could run) and the
confidence guard.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.agents.registry import load_agents
from app.policy_files import PolicyFileError
from app.routing.golden import evaluate_async, load_golden
from app.routing.intent import Guard, IntentRouter
from app.routing.policy import RouterPolicy, load_router_policy
from app.routing.rules import RuleRouter
from app.routing.semantic import SemanticRouter
from app.routing.setup import open_semantic
from app.settings import SHIPPED_AGENT_DIR, SHIPPED_ROUTER_POLICY, SHIPPED_TOOL_POLICY, Settings
from app.tools.policy import PolicyError
from app.tools.service import build_registry, read_tool_policy

ROOT = Path(__file__).resolve().parents[1]


async def report(args: argparse.Namespace, policy: RouterPolicy) -> int:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        tool_policy_path=args.tool_policy,
        tool_policy_enforce=True,
        semantic_router_min_similarity=args.min_similarity,
        semantic_router_min_gap=args.semantic_gap,
    )
    semantic: SemanticRouter | None = None
    if args.semantic:
        catalog = {spec.name: spec.description for spec in build_registry(settings).specs()}
        semantic = await open_semantic(settings, policy, catalog, read_tool_policy(settings))
    router = IntentRouter(
        RuleRouter(policy, min_gap=args.min_gap),
        Guard(min_confidence=args.min_confidence, min_gap=args.min_gap),
        policy_hash="",
        semantic=semantic,
    )
    cases = load_golden(args.golden)
    if semantic is None:
        left_out = sum(case.tier == "semantic" for case in cases)
        cases = [case for case in cases if case.tier != "semantic"]
        print(f"Semantic tier: off; its {left_out} cases are left out")
    started = time.perf_counter()
    result = await evaluate_async(router, cases)
    elapsed = time.perf_counter() - started
    print(f"Golden set: {args.golden}")
    if semantic is not None:
        print(
            f"Semantic tier: all-MiniLM-L6-v2, {len(semantic.tools)} candidate tools ({', '.join(semantic.tools)}), "
            f"min similarity {semantic.min_similarity}, min gap {semantic.min_gap}; "
            f"{elapsed / len(cases) * 1000:.1f} ms per case"
        )
    print(result.render())
    return 1 if args.strict and result.failures else 0


def main() -> int:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=SHIPPED_ROUTER_POLICY, help="router policy YAML")
    parser.add_argument("--agents", type=Path, default=SHIPPED_AGENT_DIR, help="agent directory")
    parser.add_argument("--tool-policy", type=Path, default=SHIPPED_TOOL_POLICY, help="tool policy YAML (enforced)")
    parser.add_argument("--golden", type=Path, default=ROOT / "tests" / "golden_routes.yaml", help="golden set")
    parser.add_argument("--min-confidence", type=float, default=defaults.intent_min_confidence)
    parser.add_argument("--min-gap", type=float, default=defaults.intent_min_gap, help="ORCH_INTENT_MIN_GAP")
    parser.add_argument("--min-similarity", type=float, default=defaults.semantic_router_min_similarity)
    parser.add_argument("--semantic-gap", type=float, default=defaults.semantic_router_min_gap)
    parser.add_argument("--no-semantic", dest="semantic", action="store_false", help="the rules and the guard only")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any case is misrouted")
    args = parser.parse_args()
    try:
        agents = load_agents(args.agents)
        policy = load_router_policy(args.policy, agents=agents)
        print(f"Policy: {args.policy} ({len(policy.rules)} rules), agents: {args.agents} ({len(agents)})")
        return asyncio.run(report(args, policy))
    except (PolicyFileError, PolicyError) as exc:
        print(f"routing-report: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
