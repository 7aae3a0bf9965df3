"""The router policy file (``ORCH_ROUTER_POLICY_PATH``): its format, validation and compilation.

A rule has conditions over the request (the last user message, the requested model, request
metadata) and one target: a tool (with its arguments taken from the message), a model, an agent,
or the provider unchanged. Rules are tried in order and the first match wins. Everything is
checked at startup: regexes compile, argument templates name groups that exist, agents exist,
models are allowed; a bad file stops the service with one line (docs/routing.md).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.agents.registry import TOOL_NAME, AgentRegistry
from app.linear_regex import LinearPattern, PatternRefused, utf8
from app.policy_files import PolicyFileError, describe, read_yaml_mapping

FLAG = "ORCH_ROUTER_POLICY_PATH"
MAX_RULES = 5000
MAX_PATTERN_CHARS = 2000
RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Words for keyword conditions (it's). Python's re for its Unicode letters; it cannot backtrack:
# an apostrophe must sit between two letters, so a text splits into words one way only.
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")

TargetKind = Literal["tool", "model", "agent", "provider"]


# --- the file format (pydantic: unknown keys are errors) ---------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Defaults(_Strict):
    confidence: float = Field(0.9, ge=0, le=1)
    case_insensitive: bool = True


class When(_Strict):
    """Conditions; every one given must hold. A rule needs at least one."""

    message: str | None = Field(default=None, min_length=1, max_length=MAX_PATTERN_CHARS)
    message_any: list[str] | None = Field(default=None, min_length=1, max_length=100)
    keywords: list[str] | None = Field(default=None, min_length=1, max_length=500)
    unless: str | None = Field(default=None, min_length=1, max_length=MAX_PATTERN_CHARS)
    model: str | None = Field(default=None, min_length=1, max_length=MAX_PATTERN_CHARS)
    metadata: dict[str, str] | None = Field(default=None, min_length=1, max_length=32)

    @model_validator(mode="after")
    def _something(self) -> When:
        if not (self.message or self.message_any or self.keywords or self.model or self.metadata):
            raise ValueError("a rule needs at least one of message, message_any, keywords, model, metadata")
        return self

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: list[str] | None) -> list[str] | None:
        for keyword in value or ():
            if not _WORD.findall(keyword):
                raise ValueError(f"keyword {keyword!r} has no word characters")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key in value or {}:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key):
                raise ValueError(f"metadata key {key!r} must be 1-64 letters, digits, '_' or '-'")
        return value


class TargetSpec(_Strict):
    """Exactly one of ``tool``, ``model``, ``agent``, ``provider``."""

    tool: str | None = None
    args: dict[str, Any] | None = None
    model: str | None = Field(default=None, min_length=1, max_length=256)
    agent: str | None = None
    provider: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TargetSpec:
        chosen = [name for name in ("tool", "model", "agent") if getattr(self, name)]
        if self.provider:
            chosen.append("provider")
        if len(chosen) != 1:
            raise ValueError("a target is exactly one of tool, model, agent, provider: true")
        if self.args is not None and not self.tool:
            raise ValueError("args only go with a tool target")
        if self.tool and not TOOL_NAME.match(self.tool):
            raise ValueError(f"{self.tool!r} is not a tool name")
        return self


class RuleSpec(_Strict):
    id: str = Field(pattern=RULE_ID)
    description: str = Field(default="", max_length=500)
    enabled: bool = True
    when: When
    target: TargetSpec
    confidence: float | None = Field(default=None, ge=0, le=1)
    reason: str | None = Field(default=None, min_length=1, max_length=128)
    case_insensitive: bool | None = None
    review: bool = False  # always ask a human before acting on this rule


MAX_SEMANTIC_TOOLS = 500
MAX_EXAMPLES = 50
MAX_EXAMPLE_CHARS = 300


class SemanticToolSpec(_Strict):
    """How one tool is recognised by meaning: short phrasings of what a user asks it for."""

    examples: list[str] = Field(min_length=1, max_length=MAX_EXAMPLES)

    @field_validator("examples")
    @classmethod
    def _examples(cls, value: list[str]) -> list[str]:
        for example in value:
            if not example.strip():
                raise ValueError("an example is empty")
            if len(example) > MAX_EXAMPLE_CHARS:
                raise ValueError(f"an example is longer than {MAX_EXAMPLE_CHARS} characters: {example[:40]!r}...")
        return [example.strip() for example in value]


class SemanticSpec(_Strict):
    """The semantic tier's data (``ORCH_SEMANTIC_ROUTER_ENABLED=1``): example utterances per tool."""

    tools: dict[str, SemanticToolSpec] = Field(default_factory=dict, max_length=MAX_SEMANTIC_TOOLS)

    @field_validator("tools")
    @classmethod
    def _names(cls, value: dict[str, SemanticToolSpec]) -> dict[str, SemanticToolSpec]:
        for name in value:
            if not TOOL_NAME.match(name):
                raise ValueError(f"{name!r} is not a tool name")
        return value


class PolicySpec(_Strict):
    version: Literal[1] = 1
    description: str = ""
    defaults: Defaults = Field(default_factory=Defaults)
    rules: list[RuleSpec] = Field(default_factory=list, max_length=MAX_RULES)
    semantic: SemanticSpec = Field(default_factory=SemanticSpec)


# --- the compiled form used per request ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    kind: TargetKind
    name: str | None = None  # None for the provider

    @property
    def label(self) -> str:
        """``tool:safe_calc``, ``model:qwen2.5:7b``, ``agent:holly`` or ``provider``."""
        if self.kind == "provider":
            return "provider"
        name = self.name or ""
        return f"{self.kind}:{name.lower() if self.kind == 'agent' else name}"

    @staticmethod
    def parse(label: str) -> Target:
        """The inverse of :attr:`label` (syntax only: existence is the caller's check)."""
        if label == "provider":
            return PROVIDER
        kind, sep, name = label.partition(":")
        if not sep or not name or kind not in ("tool", "model", "agent"):
            raise ValueError(f"{label!r} is not a route: use provider, tool:<name>, model:<name> or agent:<name>")
        if kind == "tool" and not TOOL_NAME.match(name):
            raise ValueError(f"{name!r} is not a tool name")
        if len(name) > 256:
            raise ValueError("the route name is longer than 256 characters")
        if not name.isprintable():
            raise ValueError(f"{name!r} has a control character")
        return Target(kind, name.lower() if kind == "agent" else name)  # type: ignore[arg-type]


PROVIDER = Target("provider")


@dataclass(slots=True)
class Rule:
    """A compiled rule. :meth:`match` returns the tool arguments on a match, else None."""

    id: str
    index: int
    description: str
    target: Target
    confidence: float
    reason: str
    review: bool
    args: dict[str, Any] | None  # templates; None: every named group of the message regex
    message: LinearPattern | None = None
    message_any: tuple[LinearPattern, ...] = ()
    keywords: frozenset[str] = frozenset()  # single lower-cased words
    phrases: tuple[str, ...] = ()  # multi-word keywords, " a b " padded
    unless: LinearPattern | None = None
    model: LinearPattern | None = None
    metadata: tuple[tuple[str, LinearPattern], ...] = ()
    groups: frozenset[str] = field(default_factory=frozenset)

    def match(self, request: RoutedRequest) -> dict[str, Any] | None:
        # Cheapest checks first: exact-ish ones, then words, then regexes over the text.
        if self.model is not None and not (request.model is not None and self.model.fullmatch(request.model)):
            return None
        for key, pattern in self.metadata:
            value = request.metadata.get(key)
            if value is None or not pattern.fullmatch(value):
                return None
        if (self.keywords or self.phrases) and not self._keywords_match(request):
            return None
        found: dict[str, str] = {}
        text = request.utf8
        if self.message is not None:
            hit = self.message.groups(text)
            if hit is None:
                return None
            found = hit
        if self.message_any:
            for pattern in self.message_any:
                hit = pattern.groups(text)
                if hit is not None:
                    found.update({k: v for k, v in hit.items() if k not in found})
                    break
            else:
                return None
        if self.unless is not None and self.unless.search(text):
            return None
        return self._arguments(found)

    def _keywords_match(self, request: RoutedRequest) -> bool:
        if self.keywords and not self.keywords.isdisjoint(request.words):
            return True
        return any(phrase in request.padded for phrase in self.phrases)

    def _arguments(self, found: dict[str, str]) -> dict[str, Any]:
        if self.target.kind != "tool":
            return {}
        if self.args is None:
            return {key: value.strip() for key, value in found.items()}
        return {key: _fill(value, found) for key, value in self.args.items()}


def _fill(template: Any, found: dict[str, str]) -> Any:
    if isinstance(template, str):
        return _PLACEHOLDER.sub(lambda m: found.get(m.group(1), "").strip(), template)
    if isinstance(template, dict):
        return {key: _fill(value, found) for key, value in template.items()}
    if isinstance(template, list):
        return [_fill(value, found) for value in template]
    return template


@dataclass(slots=True)
class RoutedRequest:
    """What rules look at, prepared once per request."""

    text: str
    model: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    cut: bool = False  # the message was longer than the rules' window: ``text`` is its beginning
    _words: frozenset[str] | None = None
    _padded: str | None = None
    _utf8: bytes | None = None

    @property
    def utf8(self) -> bytes:
        """The text as the rules' patterns match it, encoded once for all of them."""
        if self._utf8 is None:
            self._utf8 = utf8(self.text)
        return self._utf8

    @property
    def words(self) -> frozenset[str]:
        if self._words is None:
            self._split()
        assert self._words is not None
        return self._words

    @property
    def padded(self) -> str:
        if self._padded is None:
            self._split()
        assert self._padded is not None
        return self._padded

    def _split(self) -> None:
        tokens = _WORD.findall(self.text.lower())
        self._words = frozenset(tokens)
        self._padded = " " + " ".join(tokens) + " "


@dataclass(slots=True)
class RouterPolicy:
    path: Path | None
    description: str
    rules: list[Rule]
    # Rules left out because they name an agent that is not loaded (only when compiled with
    # skip_missing_agents, i.e. the shipped policy): (rule id, agent name).
    skipped: tuple[tuple[str, str], ...] = ()
    # The semantic tier's example utterances, by tool name.
    examples: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        """Every target the policy can route to (label -> a description), plus the provider."""
        labels: dict[str, str] = {}
        for rule in self.rules:
            labels.setdefault(rule.target.label, rule.description or rule.id)
        labels.setdefault("provider", "anything else: answer with the language model as usual")
        return labels


def _compile(pattern: str, *, case_insensitive: bool, where: str) -> LinearPattern:
    try:
        return LinearPattern(pattern, case_insensitive=case_insensitive)
    except PatternRefused as exc:
        raise ValueError(f"{where}: invalid regex: {exc}") from None


def _placeholders(template: Any) -> set[str]:
    if isinstance(template, str):
        return set(_PLACEHOLDER.findall(template))
    if isinstance(template, dict):
        return set().union(*(_placeholders(v) for v in template.values())) if template else set()
    if isinstance(template, list):
        return set().union(*(_placeholders(v) for v in template)) if template else set()
    return set()


def compile_policy(
    spec: PolicySpec,
    *,
    path: Path | None = None,
    agents: AgentRegistry | None = None,
    model_allowlist: Collection[str] = (),
    skip_missing_agents: bool = False,
) -> RouterPolicy:
    """Turn a validated spec into matchers; raise ValueError naming the rule on any problem.

    ``skip_missing_agents``: a rule naming an agent that ``agents`` lacks is left out (listed in
    ``skipped``) instead of refused.
    """
    rules: list[Rule] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for spec_rule in spec.rules:
        where = f"rule {spec_rule.id!r}"
        if spec_rule.id in seen:
            raise ValueError(f"{where}: the id is used twice")
        seen.add(spec_rule.id)
        if not spec_rule.enabled:
            continue
        ci = spec.defaults.case_insensitive if spec_rule.case_insensitive is None else spec_rule.case_insensitive
        when = spec_rule.when
        message = _compile(when.message, case_insensitive=ci, where=f"{where}: when.message") if when.message else None
        message_any = tuple(
            _compile(p, case_insensitive=ci, where=f"{where}: when.message_any[{i}]")
            for i, p in enumerate(when.message_any or ())
        )
        groups: set[str] = set(message.groupindex) if message else set()
        for pattern in message_any:
            groups |= set(pattern.groupindex)
        single: set[str] = set()
        phrases: list[str] = []
        for keyword in when.keywords or ():
            words = _WORD.findall(keyword.lower())
            if len(words) == 1:
                single.add(words[0])
            else:
                phrases.append(" " + " ".join(words) + " ")
        target_spec = spec_rule.target
        target: Target
        if target_spec.tool:
            target = Target("tool", target_spec.tool)
            if target_spec.args is not None:
                missing = _placeholders(target_spec.args) - groups
                if missing:
                    raise ValueError(
                        f"{where}: target.args uses {sorted(missing)} but the message regexes have no such named group"
                    )
        elif target_spec.model:
            if model_allowlist and target_spec.model not in model_allowlist:
                raise ValueError(f"{where}: model {target_spec.model!r} is not in ORCH_LLM_MODEL_ALLOWLIST")
            target = Target("model", target_spec.model)
        elif target_spec.agent:
            if agents is not None and target_spec.agent not in agents:
                if skip_missing_agents:
                    skipped.append((spec_rule.id, target_spec.agent))
                    continue
                raise ValueError(f"{where}: there is no agent named {target_spec.agent!r} (ORCH_AGENT_DIR)")
            target = Target("agent", target_spec.agent.lower())
        else:
            target = PROVIDER
        rules.append(
            Rule(
                id=spec_rule.id,
                index=len(rules),
                description=spec_rule.description,
                target=target,
                confidence=spec.defaults.confidence if spec_rule.confidence is None else spec_rule.confidence,
                reason=spec_rule.reason or spec_rule.id,
                review=spec_rule.review,
                args=target_spec.args,
                message=message,
                message_any=message_any,
                keywords=frozenset(single),
                phrases=tuple(phrases),
                unless=_compile(when.unless, case_insensitive=ci, where=f"{where}: when.unless")
                if when.unless
                else None,
                model=_compile(when.model, case_insensitive=False, where=f"{where}: when.model")
                if when.model
                else None,
                metadata=tuple(
                    (key.lower(), _compile(value, case_insensitive=ci, where=f"{where}: when.metadata.{key}"))
                    for key, value in (when.metadata or {}).items()
                ),
                groups=frozenset(groups),
            )
        )
    return RouterPolicy(
        path=path,
        description=spec.description,
        rules=rules,
        skipped=tuple(skipped),
        examples={name: tuple(tool.examples) for name, tool in spec.semantic.tools.items()},
    )


def parse_policy(
    data: dict[str, Any],
    *,
    path: Path | None = None,
    agents: AgentRegistry | None = None,
    model_allowlist: Collection[str] = (),
    skip_missing_agents: bool = False,
) -> RouterPolicy:
    """Validate and compile a policy given as data; raise :class:`PolicyFileError` (one line)."""
    where = f"{FLAG}: {path}" if path else FLAG
    try:
        spec = PolicySpec.model_validate(data)
    except ValidationError as exc:
        raise PolicyFileError(f"{where}: {describe(exc)}") from None
    try:
        return compile_policy(
            spec, path=path, agents=agents, model_allowlist=model_allowlist, skip_missing_agents=skip_missing_agents
        )
    except ValueError as exc:
        raise PolicyFileError(f"{where}: {exc}") from None


def load_router_policy(
    path: Path,
    *,
    agents: AgentRegistry | None = None,
    model_allowlist: Collection[str] = (),
    skip_missing_agents: bool = False,
) -> RouterPolicy:
    return parse_policy(
        read_yaml_mapping(path, flag=FLAG),
        path=path,
        agents=agents,
        model_allowlist=model_allowlist,
        skip_missing_agents=skip_missing_agents,
    )
