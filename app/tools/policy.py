"""The tool policy (``policies/tool_policy.yaml``): which tool calls run, which need a person's
approval, which are refused.

Format (see docs/tools.md)::

    version: 1
    rules:
      - id: allow_safe_tools            # unique; reported in decisions and receipts
        tools: [safe_calc, text_stats]  # names or glob patterns (fnmatch, case-sensitive)
        action: allow                   # allow | require_approval | deny
        reason: safe_builtin            # optional, defaults to the id
        when:                           # optional conditions on the arguments, all must hold
          expression: {max_length: 200}

Decision: every rule whose tools match the call and whose conditions all hold is a candidate; the
strictest action among the candidates wins (``deny`` > ``require_approval`` > ``allow``), and
among rules with that action the first in the file is the one reported. No candidate: denied
(``default_deny``, or ``condition_failed`` naming the first rule for this tool whose conditions
did not hold). An ``allow`` listed early therefore never overrides a later ``deny``.

Conditions, per argument: ``max_length``, ``min_length`` (characters of the value; a non-string
value is measured as its JSON text), ``matches``, ``not_matches`` (a regular expression searched
in the value, RE2 syntax: :mod:`app.linear_regex`), ``in``, ``not_in`` (the value is / is not one
of a list). An argument the call does not have fails ``max_length``, ``min_length``, ``matches``
and ``in``, and satisfies ``not_matches`` and ``not_in``.

The file is validated when the service starts: a mistake stops it with the file, the line and the
reason. Rules that name a tool exactly must name a tool that exists (a misspelt ``deny`` would
silently deny nothing), and conditions must name arguments that tool has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from app.linear_regex import LinearPattern, PatternRefused

ALLOW, REQUIRE_APPROVAL, DENY = "allow", "require_approval", "deny"
_STRICTNESS = {ALLOW: 0, REQUIRE_APPROVAL: 1, DENY: 2}
_GLOB = re.compile(r"[*?\[]")
MAX_POLICY_BYTES = 1_000_000  # a policy is a page of rules, not a data set

Scalar = str | int | float | bool | None


class PolicyError(ValueError):
    """The policy file is unusable; the message names the file, the line and the reason."""


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    max_length: int | None = Field(default=None, ge=0)
    min_length: int | None = Field(default=None, ge=0)
    matches: str | None = None
    not_matches: str | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    not_in: list[Scalar] | None = None


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    tools: Annotated[list[str], BeforeValidator(_as_list)] = Field(min_length=1)
    action: Literal["allow", "require_approval", "deny"]
    reason: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    description: str | None = None
    when: dict[str, Condition] = Field(default_factory=dict)


class PolicyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    rules: list[Rule]


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # allow | require_approval | deny
    rule: str | None
    reason: str

    @property
    def allowed(self) -> bool:
        return self.action != DENY

    def as_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "action": self.action, "rule": self.rule, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class _Check:
    arg: str
    max_length: int | None
    min_length: int | None
    matches: LinearPattern | None
    not_matches: LinearPattern | None
    within: tuple[Scalar, ...] | None
    outside: tuple[Scalar, ...] | None

    def holds(self, args: dict[str, Any]) -> bool:
        if self.arg not in args:
            return self.max_length is None and self.min_length is None and self.matches is None and self.within is None
        value = args[self.arg]
        text = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
        if self.max_length is not None and len(text) > self.max_length:
            return False
        if self.min_length is not None and len(text) < self.min_length:
            return False
        if self.matches is not None and not self.matches.search(text):
            return False
        if self.not_matches is not None and self.not_matches.search(text):
            return False
        if self.within is not None and not _member(value, self.within):
            return False
        return not (self.outside is not None and _member(value, self.outside))


def _member(value: Any, options: tuple[Scalar, ...]) -> bool:
    # JSON semantics: true is not 1, 1 is 1.0.
    return any(type(value) is type(o) or (_number(value) and _number(o)) for o in options if o == value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class _Rule:
    id: str
    patterns: tuple[str, ...]
    action: str
    reason: str
    checks: tuple[_Check, ...]

    def covers(self, tool: str) -> bool:
        return any(fnmatchcase(tool, pattern) for pattern in self.patterns)

    def holds(self, args: dict[str, Any]) -> bool:
        return all(check.holds(args) for check in self.checks)


class ToolPolicy:
    """A loaded tool policy; :meth:`decide` is called for every tool call."""

    def __init__(self, rules: list[_Rule], *, enforce: bool, path: Path, missing: bool = False) -> None:
        self.rules = rules
        self.enforce = enforce
        self.path = path
        self.missing = missing

    def decide(self, tool: str, args: dict[str, Any]) -> Decision:
        if not self.enforce:
            return Decision(ALLOW, None, "policy_disabled")
        if self.missing:
            return Decision(DENY, None, "policy_missing")
        best: _Rule | None = None
        failed: _Rule | None = None
        for rule in self.rules:
            if not rule.covers(tool):
                continue
            if not rule.holds(args):
                failed = failed or rule
                continue
            if best is None or _STRICTNESS[rule.action] > _STRICTNESS[best.action]:
                best = rule
        if best is not None:
            return Decision(best.action, best.id, best.reason)
        if failed is not None:
            return Decision(DENY, failed.id, "condition_failed")
        return Decision(DENY, None, "default_deny")

    def may_require_approval(self, tool: str) -> bool:
        """Could the policy ask for an approval for some call of ``tool``?"""
        return self.enforce and any(rule.covers(tool) and rule.action == REQUIRE_APPROVAL for rule in self.rules)

    def may_offer(self, tool: str) -> bool:
        """Could some call of ``tool`` be allowed (with or without approval)? Used to list tools."""
        if not self.enforce:
            return True
        if self.missing:
            return False
        for rule in self.rules:
            if rule.covers(tool) and rule.action == DENY and not rule.checks:
                return False  # denied whatever the arguments
        return any(rule.covers(tool) and rule.action != DENY for rule in self.rules)


# --- loading -----------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    """Map every location (``("rules", 0, "action")``) to its 1-based line in the file."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            out[(*path, key)] = key_node.start_mark.line + 1
            _lines(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*path, index), out)


def _where(loc: tuple[Any, ...]) -> str:
    text = ""
    for item in loc:
        text += f"[{item}]" if isinstance(item, int) else (f".{item}" if text else str(item))
    return text or "<top>"


def _line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _parse(path: Path, raw: bytes) -> tuple[PolicyDocument, dict[tuple[Any, ...], int]]:
    """The YAML as a validated document, and the line of every location in it."""
    try:
        text = raw.decode("utf-8")
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: the tool policy is not UTF-8 text") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise PolicyError(f"{path} line {line}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: invalid YAML: {exc}") from None
    lines: dict[tuple[Any, ...], int] = {}
    if root is not None:
        _lines(root, (), lines)
    if not isinstance(data, dict):
        raise PolicyError(f"{path} line 1: expected a mapping with 'version: 1' and 'rules'")
    try:
        return PolicyDocument.model_validate(data), lines
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = tuple(item for item in first["loc"] if not (isinstance(item, str) and "[" in item))
        message = str(first["msg"]).removeprefix("Value error, ")
        raise PolicyError(f"{path} line {_line_of(loc, lines)} ({_where(loc)}): {message}") from None


class _Failure:
    """Builds a :class:`PolicyError` pointing at a location of the file."""

    def __init__(self, path: Path, lines: dict[tuple[Any, ...], int]) -> None:
        self.path = path
        self.lines = lines

    def at(self, loc: tuple[Any, ...], message: str) -> PolicyError:
        return PolicyError(f"{self.path} line {_line_of(loc, self.lines)} ({_where(loc)}): {message}")

    def regex(self, loc: tuple[Any, ...], pattern: str | None) -> LinearPattern | None:
        if pattern is None:
            return None
        try:
            return LinearPattern(pattern)
        except PatternRefused as exc:
            raise self.at(loc, f"invalid regular expression {pattern!r}: {exc}") from None


def _build_rule(rule: Rule, at: tuple[Any, ...], known_tools: dict[str, frozenset[str]], fail: _Failure) -> _Rule:
    exact: list[str] = []
    for position, pattern in enumerate(rule.tools):
        if _GLOB.search(pattern):
            if not any(fnmatchcase(name, pattern) for name in known_tools):
                raise fail.at((*at, "tools", position), f"the pattern {pattern!r} matches no tool")
        elif pattern not in known_tools:
            known = ", ".join(sorted(known_tools))
            raise fail.at((*at, "tools", position), f"unknown tool {pattern!r} (tools: {known})")
        else:
            exact.append(pattern)
    checks: list[_Check] = []
    for arg, condition in rule.when.items():
        where = (*at, "when", arg)
        if exact and not any(arg in known_tools[name] for name in exact):
            raise fail.at(where, f"no tool of this rule has an argument {arg!r}")
        if not condition.model_fields_set:
            raise fail.at(where, "a condition needs at least one of max_length, min_length, matches, ...")
        checks.append(
            _Check(
                arg=arg,
                max_length=condition.max_length,
                min_length=condition.min_length,
                matches=fail.regex(where, condition.matches),
                not_matches=fail.regex(where, condition.not_matches),
                within=tuple(condition.in_) if condition.in_ is not None else None,
                outside=tuple(condition.not_in) if condition.not_in is not None else None,
            )
        )
    return _Rule(rule.id, tuple(rule.tools), rule.action, rule.reason or rule.id, tuple(checks))


def load_policy(path: Path, *, enforce: bool, known_tools: dict[str, frozenset[str]]) -> ToolPolicy:
    """Read and validate the policy file. A missing file gives a policy that denies everything
    (``policy_missing``) when enforced; any other problem raises :class:`PolicyError`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ToolPolicy([], enforce=enforce, path=path, missing=True)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the tool policy: {exc.strerror or exc}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"{path}: the tool policy is larger than {MAX_POLICY_BYTES} bytes")
    document, lines = _parse(path, raw)
    fail = _Failure(path, lines)
    rules: list[_Rule] = []
    ids: set[str] = set()
    for index, rule in enumerate(document.rules):
        if rule.id in ids:
            raise fail.at(("rules", index, "id"), f"duplicate rule id {rule.id!r}")
        ids.add(rule.id)
        rules.append(_build_rule(rule, ("rules", index), known_tools, fail))
    return ToolPolicy(rules, enforce=enforce, path=path)
