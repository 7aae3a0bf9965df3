"""``safe_calc``: arithmetic through a walk of Python's AST. Nothing is ever ``eval``-ed.

Only numbers (int and float literals), unary ``+ -`` and binary ``+ - * / // % **`` are accepted.
Every limit is there so that a short expression can not cost a lot: ``9**9**9`` would take
minutes and gigabytes as a Python int, so exponents and the size of every intermediate number are
bounded before the operation runs.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from app.tools.registry import ToolFailure

MAX_EXPRESSION_CHARS = 500  # a calculator line, not a program
MAX_NODES = 200  # AST nodes: bounds the work of one walk
MAX_EXPONENT = 10_000  # |b| in a ** b
MAX_INT_BITS = 4096  # ~1233 decimal digits: any intermediate integer larger than this is refused
MAX_EXACT_FLOAT = 2**53  # floats with an integral value up to this are returned as ints (exact)

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _check(value: Number) -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolFailure("number_too_large", "The result is not a finite number.")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolFailure("number_too_large", f"An intermediate number has more than {MAX_INT_BITS} bits.")
    return value


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolFailure("exponent_too_large", f"Exponents are limited to {MAX_EXPONENT}.")
    # An int result has about exponent * bits(base) bits: refuse before computing it.
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:  # noqa: SIM102
        if (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
            raise ToolFailure("number_too_large", f"The result would have more than {MAX_INT_BITS} bits.")
    if base == 0 and exponent < 0:
        raise ToolFailure("division_by_zero", "Zero can not be raised to a negative power.")
    result = base**exponent
    if isinstance(result, complex):
        raise ToolFailure("unsupported_expression", "The result would be a complex number.")
    return result


def _walk(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _walk(node.body)
    if isinstance(node, ast.Constant):
        value = node.value
        # bool is an int subclass: True + 1 is not arithmetic a user meant.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ToolFailure("unsupported_expression", "Only numbers are allowed.")
        return _check(value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check(_UNARY[type(node.op)](_walk(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _walk(node.left), _walk(node.right)
        if isinstance(node.op, ast.Mult) and isinstance(left, int) and isinstance(right, int):  # noqa: SIM102
            if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
                raise ToolFailure("number_too_large", f"The result would have more than {MAX_INT_BITS} bits.")
        try:
            if isinstance(node.op, ast.Pow):
                return _check(_power(left, right))
            return _check(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolFailure("division_by_zero", "Division by zero.") from None
        except OverflowError:
            raise ToolFailure("number_too_large", "The result is too large for a float.") from None
    raise ToolFailure(
        "unsupported_expression",
        "Only numbers, parentheses and + - * / // % ** are allowed.",
    )


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression; an integral result is returned as an int."""
    text = expression.strip()
    if not text:
        raise ToolFailure("missing_expression", "The expression is empty.")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolFailure("expression_too_long", f"Expressions are limited to {MAX_EXPRESSION_CHARS} characters.")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolFailure("syntax_error", "The expression is not valid arithmetic.") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolFailure("expression_too_long", f"Expressions are limited to {MAX_NODES} syntax nodes.")
    value = _walk(tree)
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_EXACT_FLOAT:
        return int(value)  # "2**10/4" -> 256, not 256.0
    return value
