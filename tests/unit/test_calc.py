"""safe_calc: arithmetic by an AST walk, with bounds that keep short inputs cheap."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.tools.calc import MAX_EXPRESSION_CHARS, evaluate
from app.tools.registry import ToolFailure


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2**10/4", 256),
        ("1+2*3", 7),
        ("(1+2)*3", 9),
        ("7//2", 3),
        ("7 % 3", 1),
        ("-3 + +4", 1),
        ("1/4", 0.25),
        ("2**-2", 0.25),
        ("0.1+0.2", 0.1 + 0.2),
        ("10/5", 2),
        ("2**64", 2**64),
        ("1e3", 1000),
    ],
)
def test_arithmetic(expression: str, value: float) -> None:
    result = evaluate(expression)
    assert result == value
    if float(value).is_integer() and abs(value) < 2**53:
        assert isinstance(result, int)  # 256, not 256.0


@pytest.mark.parametrize(
    ("expression", "code"),
    [
        ("", "missing_expression"),
        ("   ", "missing_expression"),
        ("1/0", "division_by_zero"),
        ("5//0", "division_by_zero"),
        ("5%0", "division_by_zero"),
        ("0**-1", "division_by_zero"),
        ("9**9**9", "exponent_too_large"),
        ("2**100000", "exponent_too_large"),
        ("10**5000", "number_too_large"),
        ("(10**1000)*(10**1000)", "number_too_large"),
        ("1.5**5000", "number_too_large"),
        ("1e308*10", "number_too_large"),
        ("(-8)**0.5", "unsupported_expression"),
        ("__import__('os').system('id')", "unsupported_expression"),
        ("open('/etc/passwd')", "unsupported_expression"),
        ("x+1", "unsupported_expression"),
        ("'a'*3", "unsupported_expression"),
        ("True+1", "unsupported_expression"),
        ("[1,2]", "unsupported_expression"),
        ("1 if 1 else 2", "unsupported_expression"),
        ("1 << 2", "unsupported_expression"),
        ("1j", "unsupported_expression"),
        ("lambda: 1", "unsupported_expression"),
        ("1 +", "syntax_error"),
        ("1" * (MAX_EXPRESSION_CHARS + 1), "expression_too_long"),
        ("+".join(["1"] * 200), "expression_too_long"),
    ],
)
def test_refusals(expression: str, code: str) -> None:
    with pytest.raises(ToolFailure) as failure:
        evaluate(expression)
    assert failure.value.code == code


def test_the_worst_short_inputs_are_cheap() -> None:
    started = time.perf_counter()
    for expression in ("9**9**9", "(2**4096)**2", "2**10000", "((((2**99)**99)**99)**99)"):
        with pytest.raises(ToolFailure):
            evaluate(expression)
    assert time.perf_counter() - started < 0.5


_OPS = st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "(", ")", " ", ".", "e", "j", "x", "_", "'", "[", "]"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(-(10**6), 10**6).map(str), _OPS), max_size=30).map("".join))
def test_any_input_gives_a_number_or_a_refusal(text: str) -> None:
    """Whatever is typed: a number, or a ToolFailure with a code; never another exception."""
    try:
        value = evaluate(text)
    except ToolFailure as failure:
        assert failure.code
    else:
        assert isinstance(value, int | float) and not isinstance(value, bool)
