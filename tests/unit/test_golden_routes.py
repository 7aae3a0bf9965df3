"""The shipped router policy routes the whole golden set right: the rules and the guard, and the
semantic tier against the real local embedding model."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
from pathlib import Path

from app.agents.registry import load_agents
from app.routing.golden import evaluate, load_golden
from app.routing.intent import Guard, IntentRouter
from app.routing.policy import load_router_policy
from app.routing.rules import RuleRouter
from app.routing.semantic import SemanticRouter
from app.routing.setup import open_semantic
from app.settings import SHIPPED_AGENT_DIR, SHIPPED_ROUTER_POLICY, Settings
from app.tools.service import build_registry, read_tool_policy
from tests.embedding_support import local_model

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden_routes.yaml"


@functools.cache
def shipped_semantic() -> SemanticRouter:
    """The semantic tier as the service builds it with the shipped files and default thresholds."""
    settings = Settings(_env_file=None, tool_policy_enforce=True)  # type: ignore[call-arg]
    policy = load_router_policy(SHIPPED_ROUTER_POLICY, agents=load_agents(SHIPPED_AGENT_DIR))
    catalog = {spec.name: spec.description for spec in build_registry(settings).specs()}
    return asyncio.run(open_semantic(settings, policy, catalog, read_tool_policy(settings), embedder=local_model()))


def shipped_router() -> IntentRouter:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    policy = load_router_policy(SHIPPED_ROUTER_POLICY, agents=load_agents(SHIPPED_AGENT_DIR))
    return IntentRouter(
        RuleRouter(policy, min_gap=defaults.intent_min_gap),
        Guard(min_confidence=defaults.intent_min_confidence, min_gap=defaults.intent_min_gap),
        policy_hash="",
        semantic=shipped_semantic(),
    )


def test_the_golden_set_is_big_enough_and_has_tricky_negatives() -> None:
    cases = load_golden(GOLDEN)
    assert len(cases) >= 60
    negatives = [case for case in cases if case.route == "provider" and any(ch.isdigit() for ch in case.prompt)]
    assert len(negatives) >= 15  # messages with digits that are not math
    assert {case.route for case in cases} >= {"provider", "tool:safe_calc", "tool:echo", "agent:holly"}
    semantic = [case for case in cases if case.tier == "semantic"]
    for tool in shipped_semantic().tools:  # paraphrases of every candidate tool's purpose
        assert sum(case.route == f"tool:{tool}" for case in semantic) >= 4, tool
    assert sum(case.route == "provider" for case in semantic) >= 25  # near-misses for the model
    assert sum(case.route == "review" for case in semantic) >= 3  # close calls between two tools


def test_the_shipped_policy_routes_the_golden_set_100_percent() -> None:
    report = evaluate(shipped_router(), load_golden(GOLDEN))
    print("\n" + report.render())
    assert report.failures == [], report.render()
    assert report.accuracy == 1.0


def test_the_routing_report_prints_accuracy_and_the_confusion_table() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "routing_report.py"), "--strict"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "accuracy: 100.0%" in result.stdout
    assert "expected \\ got" in result.stdout and "tool:safe_calc" in result.stdout
    assert "tier rules: 75 cases" in result.stdout and "tier semantic: " in result.stdout
    assert "semantic scores: lowest of a case for a tool" in result.stdout


def test_the_report_names_misroutes_and_strict_fails(tmp_path: Path) -> None:
    golden = tmp_path / "golden.yaml"
    golden.write_text(
        "cases:\n"
        "  - {prompt: 'calculate 2 + 2', route: provider}\n"
        "  - {prompt: 'calculate 2 + 2', route: tool:safe_calc, args: {expression: '3 + 3'}}\n"
        "  - {prompt: 'hello', route: provider}\n"
    )
    command = [sys.executable, str(ROOT / "scripts" / "routing_report.py"), "--golden", str(golden)]
    result = subprocess.run([*command, "--strict"], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "accuracy: 33.3%" in result.stdout
    assert "'calculate 2 + 2': expected provider, got tool:safe_calc" in result.stdout
    assert "args {'expression': '2 + 2'} != {'expression': '3 + 3'}" in result.stdout
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0
