"""Policy regexes run on RE2: what compiles, what is refused at startup (with the rule and the
reason), the dialect kept from Python (case-insensitivity, \\A...\\Z, \\uXXXX), and the hostile
messages that froze the service under Python's backtracking engine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from app.agents.registry import load_agents
from app.linear_regex import LinearPattern, PatternRefused
from app.memory.gate import find_intent
from app.policy_files import PolicyFileError
from app.routing.policy import RoutedRequest, load_router_policy, parse_policy
from app.routing.rules import MAX_ROUTED_CHARS, RuleRouter
from app.settings import SHIPPED_AGENT_DIR, SHIPPED_ROUTER_POLICY
from app.tools.builtins import KNOWN_TOOLS
from app.tools.policy import PolicyError, load_policy

AGENTS = load_agents(SHIPPED_AGENT_DIR)

REFUSED = [
    (r"(a)\1", "backreferences"),
    (r"(?P<x>a)(?P=x)", "backreferences"),
    (r"a(?=b)", "lookahead assertions"),
    (r"a(?!b)", "lookahead assertions"),
    (r"(?<=a)b", "lookbehind assertions"),
    (r"(?<!a)b", "lookbehind assertions"),
    (r"(?>a+)b", "atomic groups"),
    (r"a++b", "possessive quantifiers"),
    (r"(a)?(?(1)b|c)", "conditional groups"),
    (r"(?x) a b", "verbose mode"),
    (r"a{,3}", "write {0,3} for {,3}"),
    (r"(.*a){200}", "instructions, more than"),
    (r"(unclosed", "missing )"),
]


@pytest.mark.parametrize(("pattern", "reason"), REFUSED)
def test_what_re2_cannot_match_in_linear_time_is_refused_with_the_reason(pattern: str, reason: str) -> None:
    with pytest.raises(PatternRefused) as error:
        LinearPattern(pattern)
    assert reason in str(error.value)


@pytest.mark.parametrize(("pattern", "reason"), REFUSED)
def test_a_router_rule_with_such_a_pattern_stops_startup_naming_the_rule(pattern: str, reason: str) -> None:
    data: dict[str, Any] = {
        "rules": [
            {"id": "fine", "when": {"message": "^ok$"}, "target": {"tool": "echo"}},
            {"id": "math.hostile", "when": {"unless": "x", "message": pattern}, "target": {"tool": "safe_calc"}},
        ]
    }
    with pytest.raises(PolicyFileError) as error:
        parse_policy(data, agents=AGENTS)
    line = str(error.value)
    assert "\n" not in line
    assert line.startswith("ORCH_ROUTER_POLICY_PATH: rule 'math.hostile': when.message: invalid regex: ")
    assert reason in line


def test_every_condition_of_a_router_rule_is_checked() -> None:
    for where, when in [
        ("when.unless", {"message": "a", "unless": "(?=x)"}),
        ("when.message_any[1]", {"message_any": ["a", "(?=x)"]}),
        ("when.model", {"model": "(?=x)"}),
        ("when.metadata.team", {"metadata": {"team": "(?=x)"}}),
    ]:
        data = {"rules": [{"id": "r1", "when": when, "target": {"tool": "echo"}}]}
        with pytest.raises(PolicyFileError) as error:
            parse_policy(data, agents=AGENTS)
        assert f"rule 'r1': {where}: invalid regex: lookahead" in str(error.value)


def test_a_tool_policy_condition_with_such_a_pattern_names_the_line_and_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "tool_policy.yaml"
    path.write_text(
        "version: 1\nrules:\n  - id: calc\n    tools: [safe_calc]\n    action: allow\n    when:\n"
        "      expression: {not_matches: '(\\d)\\1'}\n"
    )
    with pytest.raises(PolicyError) as error:
        load_policy(path, enforce=True, known_tools=KNOWN_TOOLS)
    assert str(error.value).startswith(f"{path} line 7 (rules[0].when.expression): invalid regular expression")
    assert "backreferences" in str(error.value)


def test_the_documented_syntax_keeps_working() -> None:
    whole = LinearPattern(r"\Aforbidden\Z")
    assert whole.fullmatch("forbidden") and whole.search("forbidden")
    assert not whole.search("forbidden\n")  # \Z is the end of the text, as in Python
    assert not LinearPattern(r"^forbidden$").search("forbidden\n")  # RE2's $ is the end of the text too
    assert LinearPattern(r"caf\u00e9|\U0001F600").search("un café")
    assert LinearPattern(r"[[:alpha:]]+\Q\Z\E").search("ab\\Z")  # \Q...\E is literal, \Z too
    assert LinearPattern(r"[\]Z]").search("]")
    assert LinearPattern("HELLO", case_insensitive=True).search("say hello")
    assert not LinearPattern("HELLO").search("say hello")
    assert LinearPattern("(?i)HELLO").search("say hello")
    assert LinearPattern(r"[\w.+-]+@[\w-]+\.[\w.]+").search("mail joe@example.org")  # docs/tools.md
    echo = LinearPattern(r"^\s*echo(?:\s*:)?\s+(?P<message>(?s:\S.*))$|(?P<never>x{2})")
    assert echo.groups("echo: héllo\nworld") == {"message": "héllo\nworld"}  # groups not taken are left out
    assert echo.groups("say echo hi") is None


def test_text_that_is_not_valid_utf8_is_matched_not_refused() -> None:
    """A lone surrogate (JSON's "\\ud800" through a lenient parser) is one character, kept as is."""
    pattern = LinearPattern(r"^echo\s+(?P<m>.+)$")
    assert pattern.groups("echo a\ud800b") == {"m": "a\ud800b"}
    assert pattern.search("echo \udfff".encode("utf-8", "surrogatepass"))


def test_rules_keep_case_insensitivity_from_the_defaults_and_per_rule() -> None:
    router = RuleRouter(
        parse_policy(
            {
                "defaults": {"case_insensitive": False},
                "rules": [
                    {"id": "exact", "when": {"message": "^PING$"}, "target": {"tool": "echo"}},
                    {
                        "id": "loose",
                        "case_insensitive": True,
                        "when": {"message": "^pong$"},
                        "target": {"tool": "echo"},
                    },
                ],
            },
            agents=AGENTS,
        ),
        min_gap=0.05,
    )
    assert router.match(RoutedRequest("ping")) is None
    assert router.match(RoutedRequest("PING")) is not None
    assert router.match(RoutedRequest("PONG")) is not None


def _fit(head: str, filler: str, tail: str = "") -> str:
    room = MAX_ROUTED_CHARS - len(head) - len(tail)
    return head + (filler * (room // len(filler) + 1))[:room] + tail


# The shapes that made Python's engine backtrack on the shipped patterns, at the routed maximum.
HOSTILE = [
    _fit("calculate 1+1", " ", "x"),
    _fit("what is 1+1", " ", "x"),
    _fit("calculate 1", " )", " x"),
    _fit("calculate ", "( ", "1 + 1 x"),
    _fit("calculate ", "1 + ", "x"),
    _fit("echo", " "),
    _fit("echo", " :"),
    _fit("summarize", " ", ":" + " " * 100),
    _fit("@holly", "y"),
    _fit("", "\t", "x"),
]


def test_hostile_messages_of_the_maximum_routed_size_are_decided_at_once() -> None:
    router = RuleRouter(load_router_policy(SHIPPED_ROUTER_POLICY, agents=AGENTS), min_gap=0.05)
    for text in HOSTILE:
        assert len(text) == MAX_ROUTED_CHARS
        started = time.monotonic()
        router.match(RoutedRequest(text))
        # A generous bound: Python's engine took minutes on the first two; RE2 takes under 1 ms.
        assert time.monotonic() - started < 1.0, text[:20]


def test_the_memory_gate_finds_the_word_before_a_phrase_in_linear_time() -> None:
    assert find_intent("I can't remember this") is None
    assert find_intent("please remember this") == (7, 20)
    started = time.monotonic()
    assert find_intent("a" * 20_000 + "1 remember this") == (20_002, 20_015)
    assert find_intent("i" + " !" * 10_000 + "remember that") is None  # "i" is the speaker
    assert time.monotonic() - started < 1.0  # quadratic before: 1.7 s for 8000 letters


# The service's own regexes over caller text stay on Python's re (Unicode classes, lookarounds
# RE2 lacks); each is written so no text can be matched two ways. These shapes would expose one
# that is not: a long run of what a quantifier accepts, then what makes the match fail. Each is
# driven the ways the code calls it (findall, search, match, split, sub; fullmatch where noted).
INTERNAL = [
    ("app.orchestrator.service", "_WORDS"),
    ("app.providers.demo", "_WORD"),
    ("app.routing.policy", "_WORD"),
    ("app.routing.intent", "_CONTROL"),
    ("app.routing.intent", "_SPACES"),
    ("app.tools.builtins", "_SENTENCE_END"),
    ("app.tools.builtins", "_PIECES"),
    ("app.tools.runner", "_CONTROL"),
    ("app.memory.gate", "_INTENT"),
    ("app.memory.gate", "_WORDS"),
    ("app.memory.gate", "_LEAD_IN_TAIL"),
    ("app.memory.gate", "_CONTROL"),
    ("app.memory.gate", "_SPACES"),
    ("app.memory.store", "_TERM"),
    ("app.observability.middleware", "_SANE_REQUEST_ID"),  # fullmatch
    ("app.agents.registry", "TOOL_NAME"),
]
FULLMATCHED = {"_SANE_REQUEST_ID"}
SHAPES = [" ", "\t", "a", "a'", "a''", "1", "1a", ". ", "!", " !", "-", "\x01", "remember ", "of "]


@pytest.mark.parametrize(("module", "name"), INTERNAL)
def test_the_services_own_regexes_over_caller_text_do_not_backtrack(module: str, name: str) -> None:
    import importlib

    pattern = getattr(importlib.import_module(module), name)
    started = time.monotonic()
    for shape in SHAPES:
        for tail in ("", "x", "1", "\x00", "'"):
            text = shape * (20_000 // len(shape)) + tail
            pattern.findall(text)
            pattern.search(text)
            pattern.match(text)
            pattern.split(text)
            pattern.sub(" ", text)
            if name in FULLMATCHED:
                pattern.fullmatch(text)
    assert time.monotonic() - started < 5.0  # generous: about 0.1 s in all
