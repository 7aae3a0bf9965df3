"""The router policy file: what it accepts, what it refuses (with the rule and the reason), and how
rules match: first match wins, every condition kind, argument extraction, the runner-up."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.agents.registry import load_agents
from app.policy_files import PolicyFileError
from app.routing.policy import RoutedRequest, Target, load_router_policy, parse_policy
from app.routing.rules import RuleRouter
from app.settings import SHIPPED_AGENT_DIR, SHIPPED_ROUTER_POLICY

AGENTS = load_agents(SHIPPED_AGENT_DIR)


def policy(*rules: dict[str, Any], **top: Any) -> RuleRouter:
    return RuleRouter(parse_policy({"rules": list(rules), **top}, agents=AGENTS), min_gap=0.05)


def rule(rule_id: str, when: dict[str, Any], target: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": rule_id, "when": when, "target": target, **extra}


def route(router: RuleRouter, text: str, **kwargs: Any) -> tuple[str, dict[str, Any]] | None:
    hit = router.match(RoutedRequest(text, **kwargs))
    return (hit.rule.id, hit.params) if hit else None


def test_the_shipped_policy_loads_and_names_its_targets() -> None:
    loaded = load_router_policy(SHIPPED_ROUTER_POLICY, agents=AGENTS)
    labels = loaded.labels()
    assert {"tool:safe_calc", "tool:echo", "tool:summarize_text", "agent:holly", "provider"} == set(labels)
    assert labels["tool:safe_calc"].startswith("arithmetic")


def test_rules_for_missing_agents_are_left_out_only_when_asked(tmp_path: Path) -> None:
    """The shipped policy's Holly rules with an ORCH_AGENT_DIR that has no Holly (load_routing_config
    asks for this for the shipped file only)."""
    (tmp_path / "nova.yaml").write_text("name: Nova\nsystem_prompt: hi\n")
    nova_only = load_agents(tmp_path)
    loaded = load_router_policy(SHIPPED_ROUTER_POLICY, agents=nova_only, skip_missing_agents=True)
    assert loaded.skipped == (("agents.holly_by_metadata", "holly"), ("agents.holly_mention", "holly"))
    assert "agent:holly" not in loaded.labels() and "tool:safe_calc" in loaded.labels()
    assert [rule.index for rule in loaded.rules] == list(range(len(loaded.rules)))
    with pytest.raises(
        PolicyFileError, match=re.escape("rule 'agents.holly_by_metadata': there is no agent named 'holly'")
    ):
        load_router_policy(SHIPPED_ROUTER_POLICY, agents=nova_only)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"rules": [rule("r", {"message": "(unclosed"}, {"tool": "t"})]}, "rule 'r': when.message: invalid regex"),
        ({"rules": [rule("r", {}, {"tool": "t"})]}, "a rule needs at least one of"),
        ({"rules": [rule("r", {"message": "x"}, {"tool": "t", "model": "m"})]}, "exactly one of"),
        ({"rules": [rule("r", {"message": "x"}, {})]}, "exactly one of"),
        ({"rules": [rule("r", {"message": "x"}, {"model": "m", "args": {}})]}, "args only go with a tool"),
        ({"rules": [rule("r", {"message": "x"}, {"tool": "rm -rf"})]}, "is not a tool name"),
        ({"rules": [rule("r", {"message": "x"}, {"agent": "nobody"})]}, "there is no agent named 'nobody'"),
        (
            {"rules": [rule("r", {"message": "(?P<a>x)"}, {"tool": "t", "args": {"q": "{b}"}})]},
            "target.args uses ['b'] but the message regexes have no such named group",
        ),
        ({"rules": [rule("r", {"message": "x"}, {"tool": "t"})] * 2}, "rule 'r': the id is used twice"),
        ({"rules": [rule("r", {"message": "x"}, {"tool": "t"}, confidence=1.5)]}, "rules[0].confidence"),
        ({"rules": [rule("r", {"message": "x"}, {"tool": "t"}, colour="red")]}, "colour: Extra inputs"),
        ({"rules": [rule("bad id!", {"message": "x"}, {"tool": "t"})]}, "rules[0].id"),
        ({"rules": [rule("r", {"keywords": ["..."]}, {"tool": "t"})]}, "has no word characters"),
        ({"rules": [rule("r", {"metadata": {"bad key": "x"}}, {"tool": "t"})]}, "metadata key 'bad key'"),
        ({"version": 2, "rules": []}, "version: Input should be 1"),
        ({"rules": "nope"}, "rules: Input should be a valid list"),
    ],
)
def test_a_bad_policy_is_refused_with_one_line_naming_the_problem(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(data, agents=AGENTS)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("ORCH_ROUTER_POLICY_PATH")
    assert reason in message


def test_model_targets_must_be_allowed_and_files_must_exist(tmp_path: Path) -> None:
    data = {"rules": [rule("r", {"keywords": ["analyze"]}, {"model": "big"})]}
    with pytest.raises(PolicyFileError, match="model 'big' is not in ORCH_LLM_MODEL_ALLOWLIST"):
        parse_policy(data, model_allowlist=["small"])
    assert parse_policy(data, model_allowlist=["big"]).rules[0].target == Target("model", "big")
    with pytest.raises(PolicyFileError, match=f"{tmp_path / 'none.yaml'}: no such file"):
        load_router_policy(tmp_path / "none.yaml")
    (tmp_path / "p.yaml").write_text("rules:\n  - id: [\n")
    with pytest.raises(PolicyFileError, match="invalid YAML"):
        load_router_policy(tmp_path / "p.yaml")


def test_first_match_wins_and_disabled_rules_are_skipped() -> None:
    router = policy(
        rule("off", {"keywords": ["hello"]}, {"tool": "never"}, enabled=False),
        rule("first", {"keywords": ["hello"]}, {"tool": "a"}),
        rule("second", {"keywords": ["hello"]}, {"tool": "a"}),
    )
    assert route(router, "hello there") == ("first", {})
    assert [r.id for r in router.rules] == ["first", "second"]


def test_keywords_are_whole_words_or_phrases_in_any_case() -> None:
    router = policy(rule("k", {"keywords": ["refund", "money back"]}, {"agent": "holly"}))
    assert route(router, "I want a REFUND.")
    assert route(router, "can I get my Money  back?")
    assert route(router, "refunded already") is None  # a different word
    assert route(router, "moneyback") is None


def test_regex_groups_become_tool_arguments_and_templates_fill_them() -> None:
    router = policy(
        rule("plain", {"message": r"^weather in (?P<city>\w+)"}, {"tool": "weather"}),
        rule(
            "templated",
            {"message": r"^translate (?P<text>.+) to (?P<lang>\w+)$"},
            {"tool": "translate", "args": {"prompt": "{text}", "target": "{lang}", "fixed": 3, "all": ["{lang}"]}},
        ),
    )
    assert route(router, "weather in Paris") == ("plain", {"city": "Paris"})
    assert route(router, "translate good morning to French") == (
        "templated",
        {"prompt": "good morning", "target": "French", "fixed": 3, "all": ["French"]},
    )
    # non-tool targets never carry arguments
    agent = policy(rule("a", {"message": r"^(?P<x>hi)"}, {"agent": "holly"}))
    assert route(agent, "hi") == ("a", {})


def test_unless_model_metadata_and_message_any_conditions() -> None:
    router = policy(
        rule("unless", {"message": r"\d+", "unless": r"\d-\d"}, {"tool": "n"}),
        rule("by-model", {"model": r"fast-.*"}, {"model": "small"}),
        rule("by-meta", {"metadata": {"Tier": "gold|platinum"}}, {"agent": "holly"}),
        rule("any", {"message_any": [r"^/(?P<cmd>help)$", r"^/(?P<cmd>start)$"]}, {"tool": "cmd"}),
    )
    assert route(router, "item 42") == ("unless", {})
    assert route(router, "call 555-1234") is None
    assert route(router, "x", model="fast-1") == ("by-model", {})
    assert route(router, "x", model="slow-1") is None
    assert route(router, "x", model=None) is None
    assert route(router, "x", metadata={"tier": "GOLD"}) == ("by-meta", {})  # values: case-insensitive default
    assert route(router, "x", metadata={"tier": "silver"}) is None
    assert route(router, "/start") == ("any", {"cmd": "start"})


def test_case_sensitivity_is_per_policy_or_per_rule() -> None:
    strict = policy(rule("r", {"message": "^Hello$"}, {"tool": "t"}), defaults={"case_insensitive": False})
    assert route(strict, "hello") is None and route(strict, "Hello")
    mixed = policy(rule("r", {"message": "^Hello$"}, {"tool": "t"}, case_insensitive=False))
    assert route(mixed, "HELLO") is None


def test_the_runner_up_is_a_later_conflicting_rule_within_the_gap() -> None:
    router = policy(
        rule("a", {"keywords": ["book"]}, {"tool": "library"}, confidence=0.9),
        rule("same-target", {"keywords": ["book"]}, {"tool": "library"}, confidence=0.9),
        rule("far", {"keywords": ["book"]}, {"tool": "far"}, confidence=0.5),
        rule("close", {"keywords": ["book", "flight"]}, {"agent": "holly"}, confidence=0.88),
    )
    hit = router.match(RoutedRequest("book a table"))
    assert hit is not None and hit.rule.id == "a"
    assert hit.runner_up is not None and hit.runner_up.id == "close"
    assert hit.gap == pytest.approx(0.02)
    alone = router.match(RoutedRequest("flight"))
    assert alone is not None and alone.rule.id == "close" and alone.runner_up is None


def test_targets_parse_back_from_labels() -> None:
    for label in ("provider", "tool:safe_calc", "model:qwen2.5:3b", "agent:holly"):
        assert Target.parse(label).label == label
    assert Target.parse("agent:Holly").label == "agent:holly"
    for bad in ("", "tool:", "robot:x", "tool:rm -rf", "safe_calc"):
        with pytest.raises(ValueError, match=r"route|tool name"):
            Target.parse(bad)


def test_tool_names_can_be_checked_against_the_tool_registry() -> None:
    from app.routing.setup import RoutingConfig, check_tool_names

    config = RoutingConfig(AGENTS, load_router_policy(SHIPPED_ROUTER_POLICY, agents=AGENTS))
    check_tool_names(config, ["safe_calc", "echo", "summarize_text", "text_stats", "python_exec"])
    holly = re.escape(f"ORCH_AGENT_DIR: {SHIPPED_AGENT_DIR / 'holly.yaml'}: tools: no such tool ['safe_calc']")
    with pytest.raises(PolicyFileError, match=holly):
        check_tool_names(config, ["echo", "summarize_text"])
    rule = re.escape(f"{SHIPPED_ROUTER_POLICY}: rule 'utility.summarize': there is no tool named 'summarize_text'")
    with pytest.raises(PolicyFileError, match=rule):
        check_tool_names(config, ["safe_calc", "echo"])
