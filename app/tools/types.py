"""What the rest of the service needs to know about running a tool.

Routing (a rule that targets a tool) and the chat tool loop run tools through a
:class:`ToolRunner`; the tools package implements it (registry -> policy -> approval -> sandbox).
"""

from __future__ import annotations

from typing import Any, Protocol

from app.auth import Principal
from app.receipts.tracer import Trace

ToolResult = dict[str, Any]
"""``{"status": "ok", "tool", "result", "truncated", ...}`` or
``{"status": "error", "tool", "error": <reason code>, ...}`` (the original's result shapes)."""


def approval_message(result: ToolResult) -> str:
    """The assistant's answer when a tool call waits for a person."""
    tool = result.get("tool", "the tool")
    approval_id = result.get("approval_id")
    if not approval_id:
        reason = result.get("approval_reason", "approval_required")
        return f"The tool call {tool} needs a person's approval and could not be submitted ({reason})."
    return (
        f"The tool call {tool} needs a person's approval before it runs. Approval request {approval_id} "
        f"is pending until {result.get('expires_at')}. An approver can approve it with "
        f"POST /v1/tools/approvals/{approval_id}/approve (or refuse it with .../deny); "
        "then send your message again and the call will run."
    )


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

    def tool_names(self) -> frozenset[str]:
        """Every registered tool's name."""
        ...
