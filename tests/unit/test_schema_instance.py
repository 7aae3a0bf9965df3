"""The demo provider's schema instances: they validate, they are deterministic, and a schema they
cannot fit is a 400 (never a 500, never a hang)."""

from __future__ import annotations

import time
from typing import Any, Literal

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from app.errors import InvalidRequest
from app.providers.schema_instance import MAX_ITEMS, build_instance


class Address(BaseModel):
    street: str
    postcode: str = Field(pattern=r"^\d{4}-\d{3}$|^[0-9]+$")


class Tree(BaseModel):
    label: str
    children: list[Tree]
    parent: Tree | None


class Person(BaseModel):
    name: str = Field(min_length=3, max_length=5)
    age: int = Field(ge=18, lt=130)
    score: float = Field(gt=0.5, le=0.75)
    email: str = Field(json_schema_extra={"format": "email"})
    home: Address
    others: list[Address] | None
    role: Literal["admin", "user"]
    tags: set[str] = Field(min_length=3)
    pair: tuple[int, str]
    meta: dict[str, int]


@pytest.mark.parametrize("model", [Address, Tree, Person])
def test_pydantic_schemas_give_values_the_model_accepts(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    value = build_instance(schema, param="p")
    jsonschema.validate(value, schema)
    model.model_validate(value)
    assert build_instance(schema, param="p") == value  # deterministic


def test_the_hint_fills_the_first_free_text_when_it_fits() -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}, "n": {"type": "integer"}}}
    assert build_instance(schema, param="p", hint="hello there") == {"text": "hello there", "n": 1}
    short = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[a-z]$"}}}
    assert build_instance(short, param="p", hint="hello there") == {"code": "a"}


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "minItems": MAX_ITEMS + 1},
        {"type": "string", "minLength": 10**9},
        {"type": "string", "pattern": "^[0-9]{3}-[a-z]{9}$"},
        {"type": "string", "pattern": "(a)\\1"},  # a backreference: not RE2
        {"$ref": "#/$defs/missing"},
        {"$ref": "https://example.com/schema.json"},
        {"$defs": {"loop": {"$ref": "#/$defs/loop"}}, "$ref": "#/$defs/loop"},
        {"type": "object", "properties": {"a": {"type": "integer", "minimum": 5, "maximum": 3}}},
        {"type": "object", "patternProperties": {"^x": {"type": "string"}}, "minProperties": 1},
        {"type": 7},
        {"type": "wizard"},
        False,
        [],
    ],
)
def test_schemas_it_cannot_fit_are_a_400_naming_the_field(schema: Any) -> None:
    with pytest.raises(InvalidRequest) as refused:
        build_instance(schema, param="response_format.json_schema.schema")
    assert refused.value.param == "response_format.json_schema.schema"
    assert refused.value.status == 400


def test_a_deeply_nested_schema_is_refused_not_a_crash() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5000):
        schema = {"type": "object", "properties": {"a": schema}}
    with pytest.raises(InvalidRequest):
        build_instance(schema, param="p")


def test_a_hostile_pattern_is_matched_in_linear_time() -> None:
    # A backtracking engine takes minutes on this pattern with a long hint; RE2 does not backtrack.
    schema = {"type": "string", "pattern": "^(a+)+$"}
    started = time.monotonic()
    value = build_instance(schema, param="p", hint="a" * 50_000 + "!")
    assert value == "a"
    assert time.monotonic() - started < 5


_scalar = st.sampled_from(
    [
        {"type": "string"},
        {"type": "integer", "minimum": -3, "maximum": 40, "multipleOf": 4},
        {"type": "number", "exclusiveMinimum": 0.25},
        {"type": "boolean"},
        {"type": "null"},
        {"enum": ["a", 2, None]},
        {"const": {"x": 1}},
        {"type": "string", "format": "date-time"},
        {"type": ["null", "string"], "maxLength": 2},
    ]
)
_schemas = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, max_size=4).map(
            lambda props: {"type": "object", "properties": props, "required": sorted(props)}
        ),
        st.tuples(inner, st.integers(0, 3)).map(lambda t: {"type": "array", "items": t[0], "minItems": t[1]}),
        st.lists(inner, min_size=1, max_size=3).map(lambda options: {"anyOf": options}),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(_schemas)
def test_every_generated_schema_gets_a_valid_value(schema: dict[str, Any]) -> None:
    jsonschema.validate(build_instance(schema, param="p"), schema)
