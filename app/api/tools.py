"""Tools: list (``GET /v1/tools``), run (``POST /v1/tools/execute``) and approve.

Approval routes (``/v1/tools/approve``, ``/v1/tools/approvals*``) need the approver's bearer
(``ORCH_APPROVER_TOKEN``); a caller's token gets 403 there, and the approver's token gets 403 on
every caller route (separation of duties). The rules are in the tools service
(:class:`app.tools.service.Tools`); these routes parse, guard and call it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request

from app.api.body import read_json_object, validate
from app.api.openapi import CONFLICT, NOT_FOUND, json_body_doc
from app.deps import ApiCallerDep, ApproverDep, ToolsDep, request_id
from app.errors import InvalidRequest
from app.schemas.tools import (
    APPROVAL_ID,
    ApprovalDecisionRequest,
    ApprovalDenyRequest,
    ToolApproveRequest,
    ToolExecuteRequest,
)
from app.tools.approvals import STATUSES

router = APIRouter(prefix="/v1/tools", tags=["tools"])


def _tool_body(model: type[ToolExecuteRequest] | type[ToolApproveRequest], data: dict[str, Any]) -> Any:
    """Validate with the original's reason code (``validation_error``) on every problem."""
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise InvalidRequest("Tool name required.", param="name", code="validation_error")
    if "args" in data and data["args"] is not None and not isinstance(data["args"], dict):
        raise InvalidRequest(
            f"Tool arguments must be a JSON object, not {type(data['args']).__name__}.",
            param="args",
            code="validation_error",
        )
    try:
        return validate(model, data)
    except InvalidRequest as exc:
        exc.code = "validation_error"
        raise


@router.get("", summary="The tools you may use, in the OpenAI `tools` format")
async def list_tools(tools: ToolsDep, _: ApiCallerDep) -> dict[str, Any]:
    """``tools`` can be passed as is to a chat request; ``data`` says how each one runs."""
    return tools.list_tools()


@router.post(
    "/execute",
    summary="Run a tool (policy, approval, sandbox)",
    openapi_extra=json_body_doc(ToolExecuteRequest),
    responses={404: NOT_FOUND},
)
async def execute(request: Request, tools: ToolsDep, principal: ApiCallerDep) -> dict[str, Any]:
    """``{"result": {"status": "ok" | "error", "tool", "result" | "error", "truncated", "trace_id"}}``.

    A refused call (policy, approval, sandbox) is a 200 whose result says why; an unknown tool is
    a 404 and arguments that do not fit the tool's schema a 400, both with the reason code.
    """
    body = _tool_body(ToolExecuteRequest, await read_json_object(request))
    return await tools.execute(
        body.name,
        body.args or {},
        principal=principal,
        request_id=request_id(request),
        approval_token=body.approval_token,
    )


@router.post(
    "/approve",
    summary="Approve a tool call: a single-use token bound to the tool and its arguments (approver only)",
    openapi_extra=json_body_doc(ToolApproveRequest),
    responses={404: NOT_FOUND},
)
async def approve(request: Request, tools: ToolsDep, approver: ApproverDep) -> dict[str, Any]:
    """``{approval_id, tool, args_hash, created_at, expires_at, status: "approved"}``; pass
    ``approval_id`` as ``approval_token`` to ``/v1/tools/execute`` with exactly these arguments."""
    body = _tool_body(ToolApproveRequest, await read_json_object(request))
    return await tools.approve(
        body.name, body.args or {}, approver=approver, request_id=request_id(request), ttl=body.ttl_seconds
    )


StatusFilter = Annotated[
    Literal["pending", "approved", "consumed", "denied", "expired", "all"],
    Query(description="pending: waiting for a person (default); approved: usable once; " + ", ".join(STATUSES)),
]


@router.get("/approvals", summary="Approval requests, newest first (approver only)")
async def list_approvals(
    tools: ToolsDep,
    _: ApproverDep,
    status: StatusFilter = "pending",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    items = await tools.pending(status, limit)
    return {"object": "list", "status": status, "data": [item.listed() for item in items], "count": len(items)}


ApprovalIdPath = Annotated[str, Path(pattern=APPROVAL_ID)]


@router.get("/approvals/{approval_id}", summary="One approval (approver only)")
async def get_approval(tools: ToolsDep, _: ApproverDep, approval_id: ApprovalIdPath) -> dict[str, Any]:
    return (await tools.get_approval(approval_id)).listed()


async def _optional_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    return await read_json_object(request) if raw.strip() else {}


@router.post(
    "/approvals/{approval_id}/approve",
    summary="Approve a pending request (approver only)",
    openapi_extra=json_body_doc(ApprovalDecisionRequest),
    responses={409: CONFLICT},
)
async def approve_pending(
    request: Request, tools: ToolsDep, approver: ApproverDep, approval_id: ApprovalIdPath
) -> dict[str, Any]:
    """pending -> approved, usable once until ``ttl_seconds`` from now (by the caller who asked)."""
    body = validate(ApprovalDecisionRequest, await _optional_body(request))
    return await tools.approve_pending(
        approval_id, approver=approver, request_id=request_id(request), ttl=body.ttl_seconds
    )


@router.post(
    "/approvals/{approval_id}/deny",
    summary="Refuse a pending (or approved, unused) request (approver only)",
    openapi_extra=json_body_doc(ApprovalDenyRequest),
    responses={409: CONFLICT},
)
async def deny(request: Request, tools: ToolsDep, approver: ApproverDep, approval_id: ApprovalIdPath) -> dict[str, Any]:
    body = validate(ApprovalDenyRequest, await _optional_body(request))
    return await tools.deny(approval_id, approver=approver, request_id=request_id(request), reason=body.reason)
