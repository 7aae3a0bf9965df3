"""A ToolRunner test double: records every call and answers from a script of results.

The real runner (registry -> policy -> approvals -> sandbox) lives on the tools branch; routing
only needs the port (app/tools/types.py). The double lets routing tests assert exactly which tool
was run with which arguments.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass, field
from typing import Any

from app.auth import Principal
from app.receipts.tracer import Trace

_OPS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _arith(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_arith(node.left), _arith(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_arith(node.operand)))
    raise ValueError("unsupported_expression")


@dataclass
class Call:
    name: str
    args: dict[str, Any]
    principal: str
    trace_id: str
    approval_token: str | None


@dataclass
class RecordingToolRunner:
    """Implements app.tools.types.ToolRunner: echo and safe_calc behave like the originals,
    anything else answers ``unknown_tool``. Each run is recorded (and a receipt step written)."""

    calls: list[Call] = field(default_factory=list)

    async def run(
        self,
        name: str,
        args: dict[str, Any],
        *,
        principal: Principal,
        trace: Trace,
        approval_token: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append(Call(name, dict(args), principal.id, trace.id, approval_token))
        trace.step("tool_run", {"tool": name})
        if name == "safe_calc":
            try:
                value = _arith(ast.parse(str(args.get("expression", "")), mode="eval"))
            except (SyntaxError, ValueError, ZeroDivisionError) as exc:
                return {"status": "error", "tool": name, "error": str(exc) or "invalid_expression"}
            return {"status": "ok", "tool": name, "result": value}
        if name == "echo":
            return {"status": "ok", "tool": name, "result": f"Echo: {args.get('message', '')}"}
        return {"status": "error", "error": f"unknown_tool:{name}"}

    def openai_tools(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in names]

    def tool_names(self) -> frozenset[str]:
        return frozenset({"echo", "safe_calc"})
