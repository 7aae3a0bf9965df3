"""The built-in tools' pure parts and the registry's argument checks."""

from __future__ import annotations

import pytest

from app.tools.builtins import KNOWN_TOOLS, SCHEMAS, builtin_tools, estimate_tokens, summarize_text, text_stats
from app.tools.registry import ToolFailure, ToolRegistry, ToolSpec, args_hash


def registry(web_search: bool = False) -> ToolRegistry:
    reg = ToolRegistry()
    for spec in builtin_tools(web_search=web_search, web_search_url="https://example.org/html/", network_timeout=2):
        reg.register(spec)
    return reg


def test_the_built_ins_and_web_search_only_when_enabled() -> None:
    assert registry().names() == ["echo", "safe_calc", "summarize_text", "text_stats", "python_exec"]
    assert "web_search" in registry(web_search=True).names()
    assert set(KNOWN_TOOLS) == set(SCHEMAS) and "web_search" in KNOWN_TOOLS
    python = registry().get("python_exec")
    assert python is not None and python.sandboxed and python.needs_approval
    assert python.sandbox is not None and not python.sandbox.network
    search = registry(web_search=True).get("web_search")
    assert search is not None and search.sandbox is not None and search.sandbox.network and search.needs_approval
    calc = registry().get("safe_calc")
    assert calc is not None and not calc.sandboxed and not calc.needs_approval


def test_every_schema_refuses_unknown_arguments_and_bounds_strings() -> None:
    for name, schema in SCHEMAS.items():
        assert schema["additionalProperties"] is False, name
        for prop in schema["properties"].values():
            if prop["type"] == "string":
                assert prop["maxLength"] <= 200_000, name


def test_openai_format() -> None:
    spec = registry().get("safe_calc")
    assert spec is not None
    tool = spec.openai()
    assert tool["type"] == "function"
    assert set(tool["function"]) == {"name", "description", "parameters"}
    assert tool["function"]["parameters"]["required"] == ["expression"]


@pytest.mark.parametrize(
    ("name", "args", "param", "words"),
    [
        ("safe_calc", {}, "args", "'expression' is a required property"),
        ("safe_calc", {"expression": 5}, "args.expression", "is not of type 'string'"),
        ("safe_calc", {"expression": "1", "name": "x"}, "args.name", "Unknown argument 'name'"),
        ("safe_calc", {"expression": "1", "trace_id": "x"}, "args.trace_id", "Unknown argument"),
        ("summarize_text", {"text": "a", "max_sentences": 0}, "args.max_sentences", "minimum"),
        ("summarize_text", {"text": "a", "max_sentences": True}, "args.max_sentences", "not of type 'integer'"),
        ("python_exec", {"code": ""}, "args.code", "should be non-empty"),
        ("safe_calc", ["1+1"], "args", "must be a JSON object"),
    ],
)
def test_argument_errors_name_the_field(name: str, args: object, param: str, words: str) -> None:
    error = registry().check_args(name, args)
    assert error is not None
    assert error.param == param
    assert words in error.message


def test_argument_errors_do_not_echo_secrets_or_huge_values() -> None:
    error = registry().check_args("safe_calc", {"expression": "sk-" + "a" * 30 + "x" * 1000})
    assert error is not None
    assert "sk-aaaa" not in error.message and len(error.message) <= 300


def test_args_hash_is_canonical() -> None:
    assert args_hash({"b": 1, "a": [1, 2]}) == args_hash({"a": [1, 2], "b": 1})
    assert args_hash({"a": 1}) != args_hash({"a": 2})
    assert len(args_hash({})) == 64


def test_registry_refuses_duplicates_and_bad_specs() -> None:
    reg = ToolRegistry()
    spec = ToolSpec("t", "d", {"type": "object"}, handler=lambda args: 1)
    reg.register(spec)
    with pytest.raises(ValueError, match="twice"):
        reg.register(spec)
    with pytest.raises(ValueError, match="exactly one"):
        reg.register(ToolSpec("u", "d", {"type": "object"}))


def test_summarize_text() -> None:
    result = summarize_text({"text": "One. Two. Three. Four."})
    assert result == {"summary": "One. Two. Three.", "sentences": 3, "total_sentences": 4}
    assert summarize_text({"text": "Hi there! Is it? Yes.", "max_sentences": 1})["summary"] == "Hi there!"
    with pytest.raises(ToolFailure) as failure:
        summarize_text({"text": "   "})
    assert failure.value.code == "empty_text"


def test_text_stats() -> None:
    stats = text_stats({"text": "Hello world. How are you?\nFine."})
    assert stats["characters"] == 31 and stats["words"] == 6 and stats["lines"] == 2 and stats["sentences"] == 3
    assert stats["token_estimate_method"] == "offline_heuristic"
    assert text_stats({"text": ""})["token_estimate"] == 0


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        # cl100k_base counts, for reference (the estimate stays within ~20%)
        ("Hello world", 2),
        ("The quick brown fox jumps over the lazy dog.", 10),
        ("internationalization", 3),
        ("1234567", 3),
    ],
)
def test_token_estimate_is_close(text: str, tokens: int) -> None:
    estimate = estimate_tokens(text)
    assert abs(estimate - tokens) <= max(1, round(tokens * 0.2)), estimate
