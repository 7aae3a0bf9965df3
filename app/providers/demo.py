"""The offline demo provider: a deterministic answer, streamed word by word.

It is the default, so that the service is usable (and testable) with no model at all. The answer
is a pure function of the request: the same request always gives the same reply. It honours the
request as a model server would, so that a client's first structured-output or tools try works:

* ``max_tokens`` / ``max_completion_tokens``: the reply stops after that many words (the demo's
  tokens) with ``finish_reason: "length"``;
* ``response_format``: ``json_object`` answers a JSON object, ``json_schema`` a value built from
  the schema that validates against it (:mod:`app.providers.schema_instance`);
* ``tools`` with ``tool_choice``: ``required`` or a named function calls that tool (the named
  one, the one the last user message names, or the first), ``auto`` (the default) calls a tool
  when the last user message names it, ``none`` never; the arguments validate against the
  function's ``parameters``. After a ``tool`` message the demo answers in text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from app.errors import InvalidRequest
from app.providers.base import (
    Completion,
    ModelCard,
    ProviderHealth,
    ProviderRequest,
    StreamDelta,
    Usage,
)
from app.providers.schema_instance import build_instance

DEMO_MODEL = "orchestrators-demo"
DEMO_HEADER = "[ORCHESTRATORS_V2 demo mode]"
_QUOTE_CHARS = 200  # how much of the user's message (or a tool's answer) the reply quotes back
_ARGUMENT_PIECE = 16  # characters of tool-call arguments per streamed delta, as model servers send them
_WORD = re.compile(r"\S+\s*|\s+")
_FORCING = ("required", "any")


def _estimate_tokens(text: str) -> int:
    """A rough token count (about four characters per token), never zero for non-empty text."""
    return (len(text) + 3) // 4


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _last_user_text(request: ProviderRequest) -> str:
    for message in reversed(request.messages):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


def _heuristic_intent(text: str) -> str:
    lowered = text.lower()
    if "calc" in lowered:
        return "safe_calc"
    if "echo" in lowered:
        return "echo"
    return "chat" if lowered.strip() else "unknown"


def demo_reply(request: ProviderRequest) -> str:
    text = " ".join(_last_user_text(request).split())
    reply = (
        f"{DEMO_HEADER} No language model is configured, so this is a deterministic demo reply.\n"
        f'You said: "{_quote(text)}"\n'
        f"Intent (heuristic): {_heuristic_intent(text)}\n"
    )
    last = request.messages[-1] if request.messages else {}
    if last.get("role") == "tool":
        reply += f'The tool answered: "{_quote(_text_of(last.get("content")))}"\n'
    return reply + "To answer with a real model, set ORCH_LLM_ENABLED=1 and ORCH_LLM_PROVIDER=ollama or openai."


@dataclass(slots=True)
class _Answer:
    content: str | None
    tool_call: dict[str, Any] | None
    finish_reason: str
    completion_tokens: int


def _functions(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The request's function tools by name (in the order given)."""
    tools = options.get("tools")
    if tools is None:
        return {}
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be a list.", param="tools")
    functions: dict[str, dict[str, Any]] = {}
    for position, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequest("Each tool needs a function with a name.", param=f"tools[{position}].function.name")
        functions[name] = function  # type: ignore[assignment]
    return functions


def _find_name(text: str, name: str) -> int:
    """Where ``name`` stands in ``text`` as a whole word (any case), or -1."""
    haystack, needle = text.lower(), name.lower()
    start = haystack.find(needle)
    while start >= 0:
        end = start + len(needle)
        before = haystack[start - 1] if start else " "
        after = haystack[end] if end < len(haystack) else " "
        if not (before.isalnum() or before in "_-") and not (after.isalnum() or after in "_-"):
            return start
        start = haystack.find(needle, start + 1)
    return -1


def _named_in(text: str, names: list[str]) -> str | None:
    """The tool the text names first (as a whole word), if any."""
    found = [(position, name) for name in names if (position := _find_name(text, name)) >= 0]
    return min(found)[1] if found else None


def _chosen_tool(request: ProviderRequest, functions: dict[str, dict[str, Any]]) -> str | None:
    choice = request.options.get("tool_choice")
    if choice is not None and not functions and choice != "none":
        raise InvalidRequest("tool_choice needs tools.", param="tool_choice")
    if not functions or choice == "none":
        return None
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if name not in functions:
            raise InvalidRequest(
                f"tool_choice names a function that is not among the tools: {str(name)[:64]!r}.", param="tool_choice"
            )
        return str(name)
    named = _named_in(_last_user_text(request), list(functions))
    if choice in _FORCING:
        return named or next(iter(functions))
    if choice not in (None, "auto"):
        raise InvalidRequest("tool_choice must be none, auto, required or a named function.", param="tool_choice")
    last = request.messages[-1] if request.messages else {}
    return None if last.get("role") == "tool" else named


def _hint(text: str, name: str) -> str | None:
    """The user's words after the tool's name: what a model would most likely pass to it."""
    start = _find_name(text, name)
    rest = text[start + len(name) :] if start >= 0 else ""
    rest = " ".join(rest.split()).strip(" :,.!?\"'")
    return rest or None


def _tool_call(request: ProviderRequest, functions: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    position = list(functions).index(name)
    schema = functions[name].get("parameters")
    if schema is None:
        schema = {"type": "object", "properties": {}}
    arguments = build_instance(
        schema, param=f"tools[{position}].function.parameters", hint=_hint(_last_user_text(request), name)
    )
    encoded = orjson.dumps(arguments).decode()
    seed = orjson.dumps([name, encoded, len(request.messages)])
    return {
        "id": "call_" + hashlib.sha256(seed).hexdigest()[:24],
        "type": "function",
        "function": {"name": name, "arguments": encoded},
    }


def _content(request: ProviderRequest) -> str:
    response_format = request.options.get("response_format")
    if response_format is None:
        return demo_reply(request)
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return demo_reply(request)
    if kind == "json_object":
        text = _last_user_text(request)
        answer = {
            "mode": "demo",
            "note": "No language model is configured, so this is a deterministic demo reply.",
            "you_said": _quote(text),
            "intent": _heuristic_intent(text),
        }
        return orjson.dumps(answer).decode()
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise InvalidRequest("json_schema needs a schema.", param="response_format.json_schema.schema")
        value = build_instance(spec["schema"], param="response_format.json_schema.schema")
        return orjson.dumps(value).decode()
    raise InvalidRequest("response_format.type must be text, json_object or json_schema.", param="response_format.type")


def _word_limit(options: dict[str, Any]) -> int | None:
    limits = [
        value
        for value in (options.get("max_completion_tokens"), options.get("max_tokens"))
        if isinstance(value, int) and not isinstance(value, bool) and value > 0
    ]
    return min(limits) if limits else None


def answer(request: ProviderRequest) -> _Answer:
    """What the demo answers to this request (raises a 400 for a request it cannot honour)."""
    functions = _functions(request.options)
    tool = _chosen_tool(request, functions)
    if tool is not None:
        call = _tool_call(request, functions, tool)
        return _Answer(None, call, "tool_calls", _estimate_tokens(call["function"]["arguments"]))
    content = _content(request)
    words = _WORD.findall(content)
    limit = _word_limit(request.options)
    if limit is not None and len(content.split()) > limit:
        kept: list[str] = []
        count = 0
        for word in words:
            count += 1 if word.strip() else 0
            if count > limit:
                break
            kept.append(word)
        return _Answer("".join(kept), None, "length", limit)
    return _Answer(content, None, "stop", len(content.split()))


def _choices(request: ProviderRequest) -> int:
    n = request.options.get("n")
    return n if isinstance(n, int) and n > 1 else 1


class DemoProvider:
    """Implements :class:`app.providers.base.LLMProvider` without any I/O."""

    name = "demo"

    @staticmethod
    def _usage(request: ProviderRequest, result: _Answer) -> Usage:
        prompt = sum(_estimate_tokens(str(m.get("content") or "")) for m in request.messages)
        return Usage(prompt_tokens=prompt, completion_tokens=result.completion_tokens)

    async def complete(self, request: ProviderRequest) -> Completion:
        result = answer(request)
        n = _choices(request)
        usage = self._usage(request, result)
        usage.completion_tokens *= n

        def choice() -> Completion:
            return Completion(
                content=result.content,
                model=DEMO_MODEL,
                finish_reason=result.finish_reason,
                tool_calls=[dict(result.tool_call)] if result.tool_call else None,
            )

        first = choice()
        first.usage = usage
        first.others = [choice() for _ in range(n - 1)]  # n > 1: the same deterministic answer
        return first

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        result = answer(request)
        n = _choices(request)
        for index in range(n):  # n > 1: the same deterministic answer for every choice
            if result.tool_call is not None:
                call = result.tool_call
                function = call["function"]
                head = {
                    "index": 0,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": function["name"], "arguments": ""},
                }
                yield StreamDelta(tool_calls=[head], more=True, index=index)
                arguments = function["arguments"]
                for start in range(0, len(arguments), _ARGUMENT_PIECE):
                    piece = arguments[start : start + _ARGUMENT_PIECE]
                    yield StreamDelta(
                        tool_calls=[{"index": 0, "function": {"arguments": piece}}], more=True, index=index
                    )
            else:
                for word in _WORD.findall(result.content or ""):
                    # Word by word, all at once: `more` lets the relay write them to the client together.
                    yield StreamDelta(content=word, more=True, index=index)
            yield StreamDelta(finish_reason=result.finish_reason, more=index < n - 1, index=index)
        usage = self._usage(request, result)
        usage.completion_tokens *= n
        yield StreamDelta(usage=usage)

    async def list_models(self) -> list[ModelCard]:
        return [ModelCard(id=DEMO_MODEL, owned_by="orchestrators")]

    async def health(self) -> ProviderHealth:
        return ProviderHealth(ok=True)

    async def aclose(self) -> None:
        return None
