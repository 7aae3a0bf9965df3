"""The shape of tool calls that come from an upstream, checked where they enter the service.

Everything after the providers (the tool loop, the relay, the encoders) relies on these types; a
model server that sends something else is the upstream's fault, a 502 ``provider_bad_response``
whose message names the field and the type it had. The message never quotes the upstream's value
(it may be huge, or carry something it should not): only our own field names, list positions and
JSON type names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import orjson

from app.providers.base import MAX_CHOICES

if TYPE_CHECKING:
    from app.providers.upstream import Upstream

# A streamed call's `index` names one call of one answer; no model makes this many in one answer,
# and the bound keeps the assembling buffer's keys small whatever the upstream sends.
MAX_TOOL_CALL_INDEX = 1024


class ShapeError(ValueError):
    """A value of the wrong JSON type from an upstream; ``str()`` names the field and the type."""


@contextmanager
def reported(upstream: Upstream) -> Iterator[None]:
    """Around reading an answer: a field of the wrong type is a bad answer (502) naming the field."""
    try:
        yield
    except ShapeError as exc:
        raise upstream.bad_answer(str(exc)) from None


def json_type(value: Any) -> str:
    """The JSON name of a value's type (what the message says instead of the value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _wrong(where: str, value: Any, expected: str) -> ShapeError:
    return ShapeError(f"{where} is {json_type(value)}, expected {expected}")


def _optional_text(value: Any, where: str) -> None:
    if value is not None and not isinstance(value, str):
        raise _wrong(where, value, "a string")


def optional_text(value: Any, where: str) -> str | None:
    """A string field passed on as it came (``system_fingerprint``), or absent."""
    if value is None or isinstance(value, str):
        return value
    raise _wrong(where, value, "a string")


def optional_object(value: Any, where: str) -> dict[str, Any] | None:
    """An object passed on as it came (``logprobs``, the usage details), or absent."""
    if value is not None and not isinstance(value, dict):
        raise _wrong(where, value, "an object")
    return value


def choice_index(value: Any, where: str) -> int:
    """A streamed choice's ``index``: which of the n choices the delta belongs to."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(where, value, "an integer")
    if not 0 <= value < MAX_CHOICES:
        raise ShapeError(f"{where} is out of range (0 to {MAX_CHOICES - 1})")
    return value


def _arguments(value: Any, where: str) -> str | None:
    """Arguments as OpenAI sends them (a JSON string). Some servers send the object itself: it is
    serialised here, so that everything downstream sees one type."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    raise _wrong(where, value, "a JSON string (or an object)")


def tool_calls(value: Any, where: str, *, streamed: bool) -> list[dict[str, Any]] | None:
    """``message.tool_calls`` (whole) or ``delta.tool_calls`` (streamed), checked; arguments sent as
    an object become its JSON text. A streamed call without ``index`` takes its list position.

    Raises :class:`ShapeError` naming the first field of the wrong type.
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise _wrong(where, value, "an array")
    checked: list[dict[str, Any]] = []
    for position, item in enumerate(value):
        at = f"{where}[{position}]"
        if not isinstance(item, dict):
            raise _wrong(at, item, "an object")
        call = dict(item)
        _optional_text(call.get("id"), f"{at}.id")
        _optional_text(call.get("type"), f"{at}.type")
        if streamed:
            index = call.get("index", position)
            if not isinstance(index, int) or isinstance(index, bool):
                raise _wrong(f"{at}.index", index, "an integer")
            if not 0 <= index < MAX_TOOL_CALL_INDEX:
                raise ShapeError(f"{at}.index is out of range (0 to {MAX_TOOL_CALL_INDEX - 1})")
            call["index"] = index
        function = call.get("function")
        if function is None and streamed:
            checked.append(call)  # a delta may carry only the id, or nothing new yet
            continue
        if not isinstance(function, dict):
            raise _wrong(f"{at}.function", function, "an object")
        function = dict(function)
        name = function.get("name")
        if name is None and not streamed:
            raise _wrong(f"{at}.function.name", name, "a string")
        _optional_text(name, f"{at}.function.name")
        if "arguments" in function:
            function["arguments"] = _arguments(function["arguments"], f"{at}.function.arguments")
        call["function"] = function
        checked.append(call)
    return checked
