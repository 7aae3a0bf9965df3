"""Tools: list (``GET /v1/tools``), run (``POST /v1/tools/execute``) and approve.

Approval routes (``/v1/tools/approve``, ``/v1/tools/approvals*``) need the approver's bearer
(``ORCH_APPROVER_TOKEN``); a caller's token gets 403 there, and the approver's token gets 403 on
every caller route (separation of duties).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from app.api.body import read_json_object, validate
from app.api.openapi import CONFLICT, NOT_FOUND, json_body_doc
from app.auth import Principal
from app.deps import ApiCallerDep, ApproverDep, StateDep, request_id
from app.errors import DatabaseUnavailable, InvalidRequest, NotFound
from app.lifespan import AppState
from app.settings import MAX_APPROVAL_TTL_SEC
from app.tools.approvals import STATUSES, Approval, ApprovalConflict, NotReviewable, approval_ref
from app.tools.registry import args_hash

router = APIRouter(prefix="/v1/tools", tags=["tools"])

EXECUTE_PATH = "/v1/tools/execute"
APPROVE_PATH = "/v1/tools/approve"
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


def _check_call(state: AppState, name: str, args: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """404 for an unknown tool, 400 for arguments that do not fit its schema."""
    if state.tools.registry.get(name) is None:
        raise NotFound(
            f"Unknown tool {name!r} (see GET /v1/tools).", param="name", code=f"unknown_tool:{name}", extra=extra
        )
    problem = state.tools.registry.check_args(name, args)
    if problem is not None:
        raise InvalidRequest(problem.message, param=problem.param, code="validation_error", extra=extra)


@router.get("", summary="The tools you may use, in the OpenAI `tools` format")
async def list_tools(state: StateDep, _: ApiCallerDep) -> dict[str, Any]:
    """``tools`` can be passed as is to a chat request; ``data`` says how each one runs."""
    runner = state.tools.runner
    specs = runner.available_tools()
    return {
        "object": "list",
        "tools": [spec.openai() for spec in specs],
        "data": [
            {
                "name": spec.name,
                "needs_approval": runner.approval_enforce
                and (spec.needs_approval or state.tools.policy.may_require_approval(spec.name)),
                "sandboxed": spec.sandboxed,
                "network": bool(spec.sandbox and spec.sandbox.network),
            }
            for spec in specs
        ],
    }


@router.post(
    "/execute",
    summary="Run a tool (policy, approval, sandbox)",
    openapi_extra=json_body_doc(ToolExecuteRequest),
    responses={404: NOT_FOUND},
)
async def execute(request: Request, state: StateDep, principal: ApiCallerDep) -> dict[str, Any]:
    """``{"result": {"status": "ok" | "error", "tool", "result" | "error", "truncated", "trace_id"}}``.

    A refused call (policy, approval, sandbox) is a 200 whose result says why; an unknown tool is
    a 404 and arguments that do not fit the tool's schema a 400, both with the reason code.
    """
    body = _tool_body(ToolExecuteRequest, await read_json_object(request))
    args = body.args or {}
    # The receipt's id is always generated here (never the caller's X-Request-ID), so a caller can
    # not append steps to somebody else's trace.
    trace = state.tracer.begin(
        route=EXECUTE_PATH,
        request_id=request_id(request),
        principal=principal.id,
        stream=False,
        extra={"tool": body.name, "policy_hash": state.policies.loaded_hash},
    )
    try:
        result = await state.tools.runner.run(
            body.name, args, principal=principal, trace=trace, approval_token=body.approval_token
        )
    finally:
        trace.end()
    if result.get("approval_reason") == "approvals_unavailable":
        # The approvals database did not answer: the tool was not run (the receipt says so), and
        # the caller gets the status to retry on, as every route that needs a database does.
        raise DatabaseUnavailable()
    trace_id = result.get("trace_id")
    error = str(result.get("error") or "")
    if error.startswith("unknown_tool:") or error == "validation_error":
        _check_call(state, body.name, args, extra={"request_id": trace_id})
    return {"result": result, "request_id": trace_id}


def _record_decision(state: AppState, approver: Principal, request: Request, route: str, approval: Approval) -> None:
    """Approvals are decisions too: each one leaves a receipt."""
    trace = state.tracer.begin(
        route=route, request_id=request_id(request), principal=approver.id, stream=False, extra=None
    )
    trace.step(
        "tool_approval_decision",
        {
            # A directly issued token is a bearer capability and receipts are readable by callers:
            # it is named by a hash. A request raised by a caller is bound to that caller.
            "approval_id": approval.approval_id if approval.requested_by else None,
            "approval_ref": approval_ref(approval.approval_id),
            "tool": approval.tool,
            "args_hash": approval.args_hash,
            "status": approval.status,
            "requested_by": approval.requested_by,
            "expires_at": approval.issued()["expires_at"],
        },
    )
    trace.end()


@router.post(
    "/approve",
    summary="Approve a tool call: a single-use token bound to the tool and its arguments (approver only)",
    openapi_extra=json_body_doc(ToolApproveRequest),
    responses={404: NOT_FOUND},
)
async def approve(request: Request, state: StateDep, approver: ApproverDep) -> dict[str, Any]:
    """``{approval_id, tool, args_hash, created_at, expires_at, status: "approved"}``; pass
    ``approval_id`` as ``approval_token`` to ``/v1/tools/execute`` with exactly these arguments."""
    body = _tool_body(ToolApproveRequest, await read_json_object(request))
    args = body.args or {}
    _check_call(state, body.name, args)
    approval = await state.tools.approvals.issue(
        tool=body.name, args_hash=args_hash(args), args=args, approver=approver.id, ttl=body.ttl_seconds
    )
    _record_decision(state, approver, request, APPROVE_PATH, approval)
    return approval.issued()


StatusFilter = Annotated[
    Literal["pending", "approved", "consumed", "denied", "expired", "all"],
    Query(description="pending: waiting for a person (default); approved: usable once; " + ", ".join(STATUSES)),
]


@router.get("/approvals", summary="Approval requests, newest first (approver only)")
async def list_approvals(
    state: StateDep,
    _: ApproverDep,
    status: StatusFilter = "pending",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    items = await state.tools.approvals.list(status, limit)
    return {"object": "list", "status": status, "data": [item.listed() for item in items], "count": len(items)}


ApprovalIdPath = Annotated[str, Path(pattern=APPROVAL_ID)]


async def _approval(state: AppState, approval_id: str) -> Approval:
    found = await state.tools.approvals.get(approval_id)
    if found is None:
        raise NotFound(f"No approval {approval_id!r}.", param="approval_id", code="unknown_approval")
    return found


def _conflict(exc: ApprovalConflict, allowed: str) -> InvalidRequest:
    return InvalidRequest(
        f"The approval is {exc.approval.status}; only {allowed}.",
        status=409,
        param="approval_id",
        code="approval_not_pending",
    )


@router.get("/approvals/{approval_id}", summary="One approval (approver only)")
async def get_approval(state: StateDep, _: ApproverDep, approval_id: ApprovalIdPath) -> dict[str, Any]:
    return (await _approval(state, approval_id)).listed()


async def _optional_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    return await read_json_object(request) if raw.strip() else {}


async def _decide(
    state: AppState,
    approver: Principal,
    request: Request,
    route: str,
    decision: Awaitable[Approval],
    *,
    allowed: str,
) -> dict[str, Any]:
    """Apply a person's decision (the store checks existence and state atomically) and record it."""
    try:
        approval = await decision
    except KeyError as exc:
        raise NotFound(f"No approval {exc.args[0]!r}.", param="approval_id", code="unknown_approval") from None
    except ApprovalConflict as exc:
        raise _conflict(exc, allowed) from None
    _record_decision(state, approver, request, route, approval)
    return approval.listed()


@router.post(
    "/approvals/{approval_id}/approve",
    summary="Approve a pending request (approver only)",
    openapi_extra=json_body_doc(ApprovalDecisionRequest),
    responses={409: CONFLICT},
)
async def approve_pending(
    request: Request, state: StateDep, approver: ApproverDep, approval_id: ApprovalIdPath
) -> dict[str, Any]:
    """pending -> approved, usable once until ``ttl_seconds`` from now (by the caller who asked)."""
    body = validate(ApprovalDecisionRequest, await _optional_body(request))
    decision = state.tools.approvals.approve(approval_id, approver=approver.id, ttl=body.ttl_seconds)
    route = "/v1/tools/approvals/{approval_id}/approve"
    try:
        return await _decide(state, approver, request, route, decision, allowed="a pending request can be approved")
    except NotReviewable as refused:
        raise InvalidRequest(refused.detail, status=409, param="approval_id", code="arguments_not_reviewable") from None


@router.post(
    "/approvals/{approval_id}/deny",
    summary="Refuse a pending (or approved, unused) request (approver only)",
    openapi_extra=json_body_doc(ApprovalDenyRequest),
    responses={409: CONFLICT},
)
async def deny(request: Request, state: StateDep, approver: ApproverDep, approval_id: ApprovalIdPath) -> dict[str, Any]:
    body = validate(ApprovalDenyRequest, await _optional_body(request))
    decision = state.tools.approvals.deny(approval_id, approver=approver.id, reason=body.reason)
    route = "/v1/tools/approvals/{approval_id}/deny"
    return await _decide(
        state, approver, request, route, decision, allowed="a pending or unused approved one can be denied"
    )


MODELS: list[type[BaseModel]] = [ToolExecuteRequest, ToolApproveRequest, ApprovalDecisionRequest, ApprovalDenyRequest]
