"""The built-in tools.

Safe tools run in the service (bounded, pure functions of their arguments): ``echo``,
``safe_calc``, ``summarize_text``, ``text_stats``. Tools that run code or reach the network run in
the sandbox and need approval: ``python_exec`` (never a network) and ``web_search`` (registered
only with ``ORCH_TOOL_WEB_SEARCH_ENABLED=1``; our own program, in a container with a network).

No tool takes a file path (the original's tokenizer tool executed a loader from a caller-chosen
directory, bug S2): ``text_stats`` estimates tokens with a fixed offline rule.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from app.tools.calc import MAX_EXPRESSION_CHARS, evaluate
from app.tools.registry import SandboxProgram, ToolFailure, ToolSpec

if TYPE_CHECKING:
    from app.tools.sandbox import SandboxOutcome

MAX_TEXT_CHARS = 200_000  # summarize_text / text_stats input
MAX_CODE_CHARS = 100_000  # python_exec code and stdin
MAX_ECHO_CHARS = 10_000


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


SCHEMAS: dict[str, dict[str, Any]] = {
    "echo": _object({"message": {"type": "string", "maxLength": MAX_ECHO_CHARS}}, ["message"]),
    "safe_calc": _object(
        {
            "expression": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_EXPRESSION_CHARS,
                "description": "Arithmetic: numbers, parentheses, + - * / // % **. Example: (2**10)/4",
            }
        },
        ["expression"],
    ),
    "summarize_text": _object(
        {
            "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
            "max_sentences": {"type": "integer", "minimum": 1, "maximum": 20, "default": 3},
        },
        ["text"],
    ),
    "text_stats": _object({"text": {"type": "string", "maxLength": MAX_TEXT_CHARS}}, ["text"]),
    "python_exec": _object(
        {
            "code": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_CODE_CHARS,
                "description": "A Python 3.11 program (standard library only, no network); print the result.",
            },
            "stdin": {"type": "string", "maxLength": MAX_CODE_CHARS, "default": ""},
        },
        ["code"],
    ),
    "web_search": _object(
        {
            "query": {"type": "string", "minLength": 1, "maxLength": 500},
            "max_results": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5},
            "snippet_max_chars": {"type": "integer", "minimum": 50, "maximum": 1000, "default": 400},
        },
        ["query"],
    ),
}

# Every tool name the code knows (web_search included, even when it is not enabled) with its
# argument names: the tool policy is validated against these at startup.
KNOWN_TOOLS: dict[str, frozenset[str]] = {name: frozenset(s["properties"]) for name, s in SCHEMAS.items()}


# --- safe tools ----------------------------------------------------------------------------


def echo(args: dict[str, Any]) -> str:
    return f"Echo: {args['message']}"


_JSON_INT = 2**63  # JSON numbers this service writes are 64-bit integers (orjson); larger ones are text


def safe_calc(args: dict[str, Any]) -> int | float | str:
    """The value; an integer outside the 64-bit range (up to 4096 bits are allowed) as its decimal
    text, since JSON tools (this service's and most clients') do not carry such numbers."""
    value = evaluate(args["expression"])
    if isinstance(value, int) and not -_JSON_INT <= value < _JSON_INT:
        return str(value)
    return value


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text.strip())) if s]


def summarize_text(args: dict[str, Any]) -> dict[str, Any]:
    """Extractive: the first ``max_sentences`` sentences."""
    sentences = _sentences(args["text"])
    if not sentences:
        raise ToolFailure("empty_text", "There is no text to summarize.")
    keep = sentences[: args.get("max_sentences", 3)]
    return {"summary": " ".join(keep), "sentences": len(keep), "total_sentences": len(sentences)}


# Pieces in the spirit of BPE pre-tokenisers (GPT-2 / cl100k split patterns): contractions,
# a word with its leading space, up to 3 digits, punctuation runs, whitespace.
_PIECES = re.compile(r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+(?!\S)|\s+")
_LETTERS_PER_TOKEN = 6  # a common English word is one token; long or rare words split further


def estimate_tokens(text: str) -> int:
    """An offline estimate of BPE tokens (typically within ~15% of cl100k for English prose).

    No tokenizer file is read: the service never loads vocabularies (or code) at run time.
    """
    total = 0
    for piece in _PIECES.findall(text):
        core = piece.strip()
        if not core:
            total += 1  # a run of whitespace
        elif core[0].isalpha():
            total += 1 + (len(core) - 1) // _LETTERS_PER_TOKEN
        elif core[0].isdigit():
            total += 1
        else:
            total += math.ceil(len(core) / 2)
    return total


def text_stats(args: dict[str, Any]) -> dict[str, Any]:
    text: str = args["text"]
    return {
        "characters": len(text),
        "bytes_utf8": len(text.encode("utf-8", "surrogatepass")),
        "words": len(text.split()),
        "lines": text.count("\n") + 1 if text else 0,
        "sentences": len(_sentences(text)),
        "token_estimate": estimate_tokens(text),
        "token_estimate_method": "offline_heuristic",
    }


# --- sandboxed tools -----------------------------------------------------------------------


def _program(name: str) -> str:
    return resources.files("app.tools.programs").joinpath(f"{name}.py").read_text(encoding="utf-8")


def _python_payload(args: dict[str, Any]) -> dict[str, Any]:
    return {"code": args["code"], "stdin": args.get("stdin", "")}


def _python_result(outcome: SandboxOutcome) -> dict[str, Any]:
    output = {"stdout": outcome.stdout, "stderr": outcome.stderr, "exit_code": outcome.exit_code}
    if outcome.exit_code != 0:
        last = outcome.stderr.strip().splitlines()[-1:] or [f"exit code {outcome.exit_code}"]
        raise ToolFailure("nonzero_exit", last[0], {"exit_code": outcome.exit_code, "result": output})
    return output


def _search_payload(url: str, timeout: float, cadata: str | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def payload(args: dict[str, Any]) -> dict[str, Any]:
        return {
            "query": args["query"],
            "max_results": args.get("max_results", 5),
            "snippet_max_chars": args.get("snippet_max_chars", 400),
            "url": url,
            "timeout": timeout,
            "cadata": cadata,
        }

    return payload


def _search_result(outcome: SandboxOutcome) -> dict[str, Any]:
    try:
        answer = orjson.loads(outcome.stdout)
    except orjson.JSONDecodeError:
        raise ToolFailure("sandbox_failed", "The search program gave no answer.") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else None
        detail = answer.get("detail") if isinstance(answer, dict) else None
        raise ToolFailure(str(error or "search_failed"), str(detail or ""))
    return {"results": answer.get("results") or []}


def ca_bundle() -> str | None:
    """The host's CA certificates (PEM), sent to the web_search program: the image has none."""
    try:
        import certifi

        return Path(certifi.where()).read_text(encoding="ascii")
    except (ImportError, OSError):
        pass
    cafile = ssl.get_default_verify_paths().cafile
    try:
        return Path(cafile).read_text(encoding="ascii") if cafile else None
    except OSError:
        return None


def builtin_tools(*, web_search: bool, web_search_url: str, network_timeout: float) -> list[ToolSpec]:
    """The built-in tools of this configuration, in the order they are listed."""
    tools = [
        ToolSpec("echo", "Repeat a message back (a connectivity check).", SCHEMAS["echo"], handler=echo),
        ToolSpec(
            "safe_calc",
            "Evaluate an arithmetic expression exactly (numbers and + - * / // % ** only).",
            SCHEMAS["safe_calc"],
            handler=safe_calc,
        ),
        ToolSpec(
            "summarize_text",
            "Summarize a text extractively: its first sentences.",
            SCHEMAS["summarize_text"],
            handler=summarize_text,
        ),
        ToolSpec(
            "text_stats",
            "Count the characters, words, lines and sentences of a text and estimate its tokens.",
            SCHEMAS["text_stats"],
            handler=text_stats,
        ),
        ToolSpec(
            "python_exec",
            "Run a Python program in an isolated sandbox without network access and return its output. "
            "Needs a person's approval.",
            SCHEMAS["python_exec"],
            sandbox=SandboxProgram(_program("python_exec"), _python_payload, _python_result),
            needs_approval=True,
        ),
    ]
    if web_search:
        tools.append(
            ToolSpec(
                "web_search",
                "Search the web and return result titles, links and snippets. Needs a person's approval.",
                SCHEMAS["web_search"],
                sandbox=SandboxProgram(
                    _program("web_search"),
                    _search_payload(web_search_url, network_timeout, ca_bundle()),
                    _search_result,
                    network=True,
                ),
                needs_approval=True,
            )
        )
    return tools
