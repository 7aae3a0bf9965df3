"""The tool registry: what each tool is called, what arguments it takes, and how it runs.

A tool's arguments are a JSON object checked against its JSON schema before anything else
happens (policy, approval, sandbox). Every built-in schema sets ``additionalProperties: false``:
an argument the tool does not know is an error, never passed on (the original handed arbitrary
keyword arguments to handlers, bug B7).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from app.errors import PARAM_MAX_CHARS
from app.scrub import cap_text, redact_text

_DETAIL_MAX_CHARS = 300  # schema messages quote the offending value: keep them short


class ToolFailure(Exception):
    """A tool refused or failed its input: ``code`` is the machine reason, ``detail`` says why.

    ``extra`` fields are added to the tool result (e.g. ``exit_code``, partial output).
    """

    def __init__(self, code: str, detail: str = "", extra: dict[str, Any] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.extra = extra or {}


@dataclass(frozen=True, slots=True)
class SandboxProgram:
    """How a sandboxed tool runs: a Python program (run as ``python3 -I -S -c <source> <n>``) that
    reads an n-byte JSON payload from stdin, and how its output becomes the tool's result."""

    source: str
    payload: Callable[[dict[str, Any]], dict[str, Any]]
    interpret: Callable[[Any], Any]  # SandboxOutcome -> result (may raise ToolFailure)
    network: bool = False


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    handler: Callable[[dict[str, Any]], Any] | None = None  # in-process (safe tools)
    sandbox: SandboxProgram | None = None  # sandboxed tools
    needs_approval: bool = False

    @property
    def sandboxed(self) -> bool:
        return self.sandbox is not None

    def openai(self) -> dict[str, Any]:
        """The tool in the OpenAI ``tools`` format."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True, slots=True)
class ArgumentError:
    """Why arguments failed their schema: a message and the failing location (``args.x[0]``)."""

    message: str
    param: str


def args_hash(args: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the arguments (sorted keys, no spaces): what an approval binds."""
    return hashlib.sha256(orjson.dumps(args, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _param(path: Iterable[Any]) -> str:
    text = "args"
    for item in path:
        text += f"[{item}]" if isinstance(item, int) else f".{item}"
    return cap_text(text, PARAM_MAX_CHARS)[0]


MAX_ARGS_DEPTH = 64


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays in ``value`` nest more than ``limit`` levels (without recursing)."""
    level: list[Any] = [value]
    for _ in range(limit + 1):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item if isinstance(item, list) else ())
        ]
        if not level:
            return False
    return True


@dataclass
class ToolRegistry:
    """The tools of this instance, with one compiled schema validator each."""

    _tools: dict[str, ToolSpec] = field(default_factory=dict)
    _validators: dict[str, Draft202012Validator] = field(default_factory=dict)

    def register(self, spec: ToolSpec) -> None:
        if spec.name in self._tools:
            raise ValueError(f"tool {spec.name!r} is registered twice")
        if (spec.handler is None) == (spec.sandbox is None):
            raise ValueError(f"tool {spec.name!r} needs exactly one of a handler or a sandbox program")
        Draft202012Validator.check_schema(spec.parameters)
        self._tools[spec.name] = spec
        self._validators[spec.name] = Draft202012Validator(spec.parameters)

    def get(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[ToolSpec]:
        return list(self._tools.values())

    def check_args(self, name: str, args: Any) -> ArgumentError | None:
        """None when ``args`` fit the tool's schema, else the most relevant problem."""
        if not isinstance(args, dict):
            return ArgumentError(f"Tool arguments must be a JSON object, not {type(args).__name__}.", "args")
        if _deeper_than(args, MAX_ARGS_DEPTH):
            # The schema validator recurses: a deeper value would exhaust Python's stack (a 500).
            return ArgumentError(f"Tool arguments may be nested at most {MAX_ARGS_DEPTH} levels deep.", "args")
        error = best_match(self._validators[name].iter_errors(args))
        if error is None:
            return None
        path = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            unknown = sorted(str(key) for key in error.instance if key not in known)
            if unknown:
                path.append(unknown[0])
                message = f"Unknown argument {unknown[0]!r}; this tool takes {sorted(known) or 'no arguments'}."
                return ArgumentError(cap_text(message, _DETAIL_MAX_CHARS)[0], _param(path))
        message = redact_text(error.message, pii=False)[0]
        return ArgumentError(cap_text(message, _DETAIL_MAX_CHARS)[0], _param(path))
