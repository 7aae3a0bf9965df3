"""A deterministic JSON value that fits a JSON Schema: how the demo provider answers structured
output (``response_format: json_schema``) and fills in tool-call arguments without a model.

The value is built from the schema's own words (``const``, ``enum``, ``type``,
bounds, ``format``, ``$ref``, the combinators), then checked with a real validator. A schema the
builder cannot satisfy (a ``pattern`` none of its candidates match, contradictory bounds) is a
400 naming the schema, never a value that does not fit. Caller-given ``pattern``s are matched with
RE2, so a hostile pattern cannot hold the event loop; what is built is bounded in depth and size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import jsonschema
from jsonschema import validators

from app.errors import InvalidRequest
from app.linear_regex import LinearPattern, PatternRefused

MAX_DEPTH = 16  # deeper than any hand-written schema; stops a recursive $ref from running away
# Past this depth optional parts are left out (empty lists, null where allowed), so that a
# recursive model (a tree) ends instead of reaching MAX_DEPTH.
SHALLOW = 6
MAX_ITEMS = 64  # a minItems beyond this is refused rather than built
MAX_STRING = 4096  # a minLength beyond this is refused rather than built
MAX_NODES = 10_000  # values built for one schema, all levels together

_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "demo@example.com",
    "idn-email": "demo@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
# Tried in turn against a `pattern` when the preferred text does not match it.
_PATTERN_CANDIDATES = ("demo", "a", "A", "0", "1", "a1", "A1", "x", "demo-1", "")


class SchemaUnsatisfiable(Exception):
    """The builder found no value for this schema (the message says which part)."""


def _re2_pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    if not validator.is_type(instance, "string"):
        return
    try:
        matched = LinearPattern(pattern).search(instance)
    except PatternRefused as exc:
        yield jsonschema.ValidationError(f"pattern {pattern[:80]!r} is not supported: {exc}")
        return
    if not matched:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _validator_for(schema: Any) -> Any:
    base = validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    # `pattern` is caller text: checked with RE2 instead of Python's backtracking engine.
    # `patternProperties` is not built by the builder; refused by the RE2 pattern check below.
    checker = validators.extend(base, {"pattern": _re2_pattern})
    return checker(schema)


def check_instance(schema: dict[str, Any], value: Any) -> str | None:
    """Why ``value`` does not fit ``schema`` (the first reason), or None when it does."""
    if _has_pattern_properties(schema):
        return "patternProperties is not supported by the demo provider"
    error = jsonschema.exceptions.best_match(_validator_for(schema).iter_errors(value))
    return None if error is None else error.message[:300]


def _has_pattern_properties(schema: Any, depth: int = 0) -> bool:
    if depth > MAX_DEPTH * 2:
        return False
    if isinstance(schema, dict):
        if "patternProperties" in schema:
            return True
        return any(_has_pattern_properties(value, depth + 1) for value in schema.values())
    if isinstance(schema, list):
        return any(_has_pattern_properties(value, depth + 1) for value in schema)
    return False


class _Builder:
    def __init__(self, root: dict[str, Any], hint: str | None) -> None:
        self.root = root
        self.hint = hint  # text for the first free-text string (the user's words), used once
        self.nodes = 0

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise SchemaUnsatisfiable(f"only local $ref are supported, not {ref[:80]!r}")
        node: Any = self.root
        for raw in ref[1:].split("/")[1:] if ref != "#" else []:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise SchemaUnsatisfiable(f"$ref {ref[:80]!r} points nowhere")
        return node

    def build(self, schema: Any, name: str, depth: int) -> Any:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise SchemaUnsatisfiable("the schema is too deep or too large for the demo provider")
        if schema is True or schema == {}:
            return self.text(name, {})
        if not isinstance(schema, dict):
            raise SchemaUnsatisfiable(f"{name}: the schema allows no value")
        if "$ref" in schema:
            target = self.resolve(str(schema["$ref"]))
            rest = {key: value for key, value in schema.items() if key != "$ref"}
            return self.build(_merge(target, rest) if rest and isinstance(target, dict) else target, name, depth + 1)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        if isinstance(schema.get("allOf"), list):
            merged = {key: value for key, value in schema.items() if key != "allOf"}
            for part in schema["allOf"]:
                merged = _merge(
                    merged, self.resolve(part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
                )
            return self.build(merged, name, depth + 1)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                # A value, not null, when there is a choice: Optional[X] gives an X (deep down, null).
                deep = depth >= SHALLOW
                ordered = sorted(
                    options, key=lambda option: (isinstance(option, dict) and option.get("type") == "null") != deep
                )
                return self.build(ordered[0], name, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"] or kind
            kind = kinds[0] if kinds else None
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, name, depth)
        if kind == "string":
            return self.text(name, schema)
        if kind in ("integer", "number"):
            return _number(schema, integer=kind == "integer")
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        raise SchemaUnsatisfiable(f"{name}: unknown type {str(kind)[:40]!r}")

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            raise SchemaUnsatisfiable("properties must be an object")
        # Every property, not only the required ones: strict structured output fills them all.
        return {key: self.build(sub, key, depth + 1) for key, sub in properties.items()}

    def array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        low = int(schema.get("minItems") or 0)
        high = schema.get("maxItems")
        if low > MAX_ITEMS:
            raise SchemaUnsatisfiable(f"{name}: minItems {low} is more than the demo provider builds ({MAX_ITEMS})")
        wanted = low if depth >= SHALLOW else max(low, 1)
        count = wanted if high is None else min(wanted, int(high))
        given = schema.get("prefixItems")
        prefix: list[Any] = given if isinstance(given, list) else []
        items = schema.get("items", {})
        values: list[Any] = []
        for position in range(max(count, len(prefix))):
            sub = prefix[position] if position < len(prefix) else items
            value = self.build(sub, name, depth + 1)
            if schema.get("uniqueItems") and position and value in values:
                value = _vary(value, position)
            values.append(value)
        return values

    def text(self, name: str, schema: dict[str, Any]) -> str:
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _FORMATS[fmt]
        if self.hint:
            value, self.hint = self.hint, None
        else:
            value = f"demo {name}".strip() if name else "demo"
        low = int(schema.get("minLength") or 0)
        high = schema.get("maxLength")
        if low > MAX_STRING:
            raise SchemaUnsatisfiable(f"{name}: minLength {low} is more than the demo provider builds")
        if high is not None:
            value = value[: int(high)]
        if len(value) < low:
            value = value + "x" * (low - len(value))
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            try:
                compiled = LinearPattern(pattern)
            except PatternRefused as exc:
                raise SchemaUnsatisfiable(f"{name}: its pattern is not supported ({exc})") from None
            for candidate in (value, *_PATTERN_CANDIDATES):
                if compiled.search(candidate):
                    return candidate
            raise SchemaUnsatisfiable(f"{name}: the demo provider has no text that matches its pattern")
        return value


def _merge(left: Any, right: Any) -> Any:
    if not isinstance(left, dict) or not isinstance(right, dict):
        return right
    merged = dict(left)
    for key, value in right.items():
        if key == "properties" and isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        elif key == "required" and isinstance(merged.get(key), list) and isinstance(value, list):
            merged[key] = [*merged[key], *[item for item in value if item not in merged[key]]]
        else:
            merged[key] = value
    return merged


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    low = schema.get("minimum")
    high = schema.get("maximum")
    exclusive_low = schema.get("exclusiveMinimum")
    exclusive_high = schema.get("exclusiveMaximum")
    step = schema.get("multipleOf")
    value: float = 1
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(exclusive_low, int | float) and value <= exclusive_low:
        value = exclusive_low + (1 if integer else 0.5)
    if isinstance(high, int | float) and value > high:
        value = high
    if isinstance(exclusive_high, int | float) and value >= exclusive_high:
        value = exclusive_high - (1 if integer else 0.5)
    if isinstance(step, int | float) and step > 0:
        value = math.ceil(value / step) * step
    if integer:
        return math.ceil(value)
    return float(value)


def _vary(value: Any, position: int) -> Any:
    if isinstance(value, str):
        return f"{value} {position + 1}"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + position
    return value


def build_instance(schema: Any, *, param: str, hint: str | None = None) -> Any:
    """A value that fits ``schema``, the same for the same schema and hint; 400 naming ``param``
    when none can be built."""
    if not isinstance(schema, dict) and schema is not True:
        raise InvalidRequest("The schema must be a JSON object.", param=param, code="invalid_schema")
    root = schema if isinstance(schema, dict) else {}
    try:
        jsonschema.Draft202012Validator.check_schema(root)
        value = _Builder(root, hint).build(root, "", 0)
        if hint is not None and check_instance(root, value) is not None:
            value = _Builder(root, None).build(root, "", 0)  # the user's words did not fit: plain values
    except SchemaUnsatisfiable as exc:
        raise InvalidRequest(
            f"The demo provider cannot build a value for this schema: {exc}", param=param, code="invalid_schema"
        ) from None
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(
            f"The schema is not valid JSON Schema: {exc.message[:300]}", param=param, code="invalid_schema"
        ) from None
    except (TypeError, ValueError, KeyError, RecursionError):
        raise InvalidRequest(
            "The demo provider cannot build a value for this schema.", param=param, code="invalid_schema"
        ) from None
    try:
        reason = check_instance(root, value)
    except RecursionError:
        reason = "the schema is nested too deeply"
    if reason is not None:
        raise InvalidRequest(
            f"The demo provider cannot build a value for this schema: {reason}", param=param, code="invalid_schema"
        )
    return value
