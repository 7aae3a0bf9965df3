"""Request models of the tools resource (``/v1/tools``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from app.settings import MAX_APPROVAL_TTL_SEC

TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"  # OpenAI's rule for function names
APPROVAL_ID = r"^[A-Za-z0-9_-]{1,128}$"


class ToolExecuteRequest(BaseModel):
    """Run one tool through the policy, approvals and the sandbox."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "safe_calc", "args": {"expression": "2 * (3 + 4)"}}]}
    )

    name: str = Field(pattern=TOOL_NAME, description="The tool (see GET /v1/tools).")
    args: dict[str, Any] | None = Field(default=None, description="The tool's arguments (a JSON object).")
    approval_token: str | None = Field(
        default=None, pattern=APPROVAL_ID, description="An approval id, for tools that need approval."
    )


class ToolApproveRequest(BaseModel):
    """Approve one call (tool + exact arguments) directly: a single-use token."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "python_exec", "args": {"code": "print(6 * 7)"}, "ttl_seconds": 300}]},
    )

    name: str = Field(pattern=TOOL_NAME)
    args: dict[str, Any] | None = None
    ttl_seconds: StrictInt | None = Field(
        default=None, ge=1, le=MAX_APPROVAL_TTL_SEC, description="Default ORCH_TOOL_APPROVAL_TTL_SEC."
    )


class ApprovalDecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"ttl_seconds": 300}]})

    ttl_seconds: StrictInt | None = Field(default=None, ge=1, le=MAX_APPROVAL_TTL_SEC)


class ApprovalDenyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "not needed for this task"}]})

    reason: str | None = Field(default=None, max_length=500)


MODELS: list[type[BaseModel]] = [ToolExecuteRequest, ToolApproveRequest, ApprovalDecisionRequest, ApprovalDenyRequest]
