"""What the rest of the service needs to know about running a tool.

Routing (a rule that targets a tool) and the chat tool loop run tools through a
:class:`ToolRunner`; the tools package implements it (registry -> policy -> approval -> sandbox).
"""

from __future__ import annotations

from typing import Any, Protocol

from app.auth import Principal
from app.tracing.tracer import Trace

ToolResult = dict[str, Any]
"""``{"status": "ok", "tool", "result", "truncated", ...}`` or
``{"status": "error", "tool", "error": <reason code>, ...}`` (the original's result shapes)."""


class ToolRunner(Protocol):
    async def run(
        self,
        name: str,
        args: dict[str, Any],
        *,
        principal: Principal,
        trace: Trace,
        approval_token: str | None = None,
    ) -> ToolResult:
        """Run ``name`` through the tool policy, approvals and the sandbox; record every decision
        in ``trace``. Never raises for a refused or failed tool: the result says why."""
        ...

    def openai_tools(self, names: list[str]) -> list[dict[str, Any]]:
        """The named tools in the OpenAI ``tools`` format (for offering them to a model)."""
        ...
