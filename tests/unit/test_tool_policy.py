"""The tool policy: matching semantics, conditions, and validation errors that name the line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.main import check_policy_files
from app.settings import ConfigError, load_settings
from app.tools.builtins import KNOWN_TOOLS
from app.tools.policy import PolicyError, ToolPolicy, load_policy

ROOT = Path(__file__).resolve().parents[2]


def policy(tmp_path: Path, text: str, *, enforce: bool = True) -> ToolPolicy:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return load_policy(path, enforce=enforce, known_tools=KNOWN_TOOLS)


def test_the_shipped_policy_loads_and_says_what_the_docs_say() -> None:
    shipped = load_policy(ROOT / "policies" / "tool_policy.yaml", enforce=True, known_tools=KNOWN_TOOLS)
    assert shipped.decide("safe_calc", {"expression": "1"}).action == "allow"
    assert shipped.decide("text_stats", {"text": "a"}).action == "allow"
    decision = shipped.decide("python_exec", {"code": "print(1)"})
    assert (decision.action, decision.rule) == ("require_approval", "python_exec_with_approval")
    long = shipped.decide("python_exec", {"code": "x" * 20001})
    assert (long.action, long.reason, long.rule) == ("deny", "condition_failed", "python_exec_with_approval")
    assert shipped.decide("web_search", {"query": "q" * 600}).reason == "condition_failed"
    assert shipped.decide("web_search", {"query": "weather"}).action == "require_approval"


STRICT = """\
version: 1
rules:
  - id: allow_all
    tools: ["*"]
    action: allow
  - id: calc_big_needs_approval
    tools: [safe_calc]
    action: require_approval
    when:
      expression: {min_length: 10}
  - id: no_secrets
    tools: ["*"]
    action: deny
    reason: looks_secret
    when:
      text: {matches: '(?i)password'}
"""


def test_deny_wins_over_approval_over_allow_whatever_the_order(tmp_path: Path) -> None:
    loaded = policy(tmp_path, STRICT)
    allowed = loaded.decide("safe_calc", {"expression": "1+1"})
    assert (allowed.action, allowed.rule, allowed.reason) == ("allow", "allow_all", "allow_all")
    approval = loaded.decide("safe_calc", {"expression": "1+1+1+1+1+1"})
    assert (approval.action, approval.rule) == ("require_approval", "calc_big_needs_approval")
    denied = loaded.decide("text_stats", {"text": "my Password is"})
    assert (denied.action, denied.rule, denied.reason) == ("deny", "no_secrets", "looks_secret")
    assert not denied.allowed and denied.as_dict() == {
        "allowed": False,
        "action": "deny",
        "rule": "no_secrets",
        "reason": "looks_secret",
    }


def test_default_deny_and_condition_failed(tmp_path: Path) -> None:
    loaded = policy(
        tmp_path,
        "version: 1\nrules:\n  - id: short_calc\n    tools: safe_calc\n    action: allow\n"
        "    when:\n      expression: {max_length: 5}\n",
    )
    assert loaded.decide("safe_calc", {"expression": "1+1"}).action == "allow"
    failed = loaded.decide("safe_calc", {"expression": "1+1+1+1"})
    assert (failed.action, failed.rule, failed.reason) == ("deny", "short_calc", "condition_failed")
    nothing = loaded.decide("echo", {"message": "hi"})
    assert (nothing.action, nothing.rule, nothing.reason) == ("deny", None, "default_deny")
    assert loaded.may_offer("safe_calc") and not loaded.may_offer("echo")


def test_conditions(tmp_path: Path) -> None:
    loaded = policy(
        tmp_path,
        """\
version: 1
rules:
  - id: r
    tools: [summarize_text]
    action: allow
    when:
      max_sentences: {in: [1, 2, 3]}
      text: {not_matches: 'forbidden', min_length: 2}
""",
    )
    assert loaded.decide("summarize_text", {"text": "ok text", "max_sentences": 2}).allowed
    assert loaded.decide("summarize_text", {"text": "ok text", "max_sentences": 2.0}).allowed  # JSON: 2 == 2.0
    assert not loaded.decide("summarize_text", {"text": "ok text", "max_sentences": 4}).allowed
    assert not loaded.decide("summarize_text", {"text": "forbidden", "max_sentences": 1}).allowed
    assert not loaded.decide("summarize_text", {"text": "x", "max_sentences": 1}).allowed  # min_length
    # an absent argument fails `in` (and max/min_length, matches), satisfies not_matches / not_in
    assert not loaded.decide("summarize_text", {"text": "ok text"}).allowed


def test_true_is_not_one(tmp_path: Path) -> None:
    loaded = policy(
        tmp_path,
        "version: 1\nrules:\n  - id: r\n    tools: [summarize_text]\n    action: allow\n"
        "    when:\n      max_sentences: {not_in: [true]}\n",
    )
    assert loaded.decide("summarize_text", {"text": "a", "max_sentences": 1}).allowed


def test_enforcement_off_and_missing_file(tmp_path: Path) -> None:
    off = policy(tmp_path, "version: 1\nrules: []\n", enforce=False)
    assert off.decide("python_exec", {"code": "1"}).reason == "policy_disabled"
    missing = load_policy(tmp_path / "absent.yaml", enforce=True, known_tools=KNOWN_TOOLS)
    decision = missing.decide("safe_calc", {"expression": "1"})
    assert (decision.action, decision.reason) == ("deny", "policy_missing")
    assert not missing.may_offer("safe_calc")


BAD = [
    ("version: 1\nrules:\n  - id: a\n    tools: [safe_calc]\n    action: alow\n", 5, "rules[0].action"),
    ("version: 2\nrules: []\n", 1, "version"),
    ("rules: []\n", 1, "version"),
    ("version: 1\nrules:\n  - id: a\n    tools: [pyhton_exec]\n    action: deny\n", 4, "unknown tool 'pyhton_exec'"),
    ("version: 1\nrules:\n  - id: a\n    tools: ['nothing*']\n    action: deny\n", 4, "matches no tool"),
    ("version: 1\nrules:\n  - id: a\n    tools: [safe_calc]\n    action: deny\n    colour: red\n", 6, "colour"),
    (
        "version: 1\nrules:\n  - id: a\n    tools: [safe_calc]\n    action: deny\n"
        "    when:\n      code: {max_length: 1}\n",
        7,
        "argument 'code'",
    ),
    (
        "version: 1\nrules:\n  - id: a\n    tools: [safe_calc]\n    action: deny\n    when:\n"
        "      expression: {matches: '(unclosed'}\n",
        7,
        "invalid regular expression",
    ),
    (
        "version: 1\nrules:\n  - id: a\n    tools: [safe_calc]\n    action: deny\n    when:\n      expression: {}\n",
        7,
        "needs at least one",
    ),
    (
        "version: 1\nrules:\n  - id: a\n    tools: [safe_calc]\n    action: deny\n"
        "  - id: a\n    tools: [echo]\n    action: deny\n",
        6,
        "duplicate rule id",
    ),
    ("version: 1\nversion: 1\nrules: []\n", 2, "duplicate key"),
    ("version: 1\nrules:\n  - id: a\n    tools: [safe_calc\n    action: deny\n", 5, "invalid YAML"),
    ("- just\n- a list\n", 1, "expected a mapping"),
    (
        "version: 1\nrules:\n  - id: a\n    tools: [safe_calc]\n    action: deny\n    when:\n"
        "      expression: {max_length: -1}\n",
        7,
        "max_length",
    ),
]


@pytest.mark.parametrize(("text", "line", "reason"), BAD)
def test_a_bad_file_names_the_line_and_the_reason(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as error:
        load_policy(path, enforce=True, known_tools=KNOWN_TOOLS)
    message = str(error.value)
    assert message.startswith(f"{path} line {line}"), message
    assert reason in message
    assert "\n" not in message


def test_a_bad_policy_stops_startup_with_one_line_naming_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nrules:\n  - id: a\n    tools: [safe_calc]\n    action: alow\n")
    with pytest.raises(ConfigError) as error:
        check_policy_files(load_settings(_env_file=None, tool_policy_path=path))
    message = str(error.value)
    assert re.search(rf"ORCH_TOOL_POLICY_PATH: {re.escape(str(path))} line 5 \(rules\[0\]\.action\)", message)
    assert "\n" not in message
