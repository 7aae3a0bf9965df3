"""The tools service: what every face (HTTP routes, console, CLI, MCP server) calls to list,
run, approve and deny tools; and its wiring for the lifespan (registry, tool policy, approvals,
sandbox, runner)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.auth import Principal
from app.db.connection import Database
from app.errors import DatabaseUnavailable, InvalidRequest, NotFound
from app.observability.logging import get_logger
from app.policies import PolicySnapshot
from app.readiness import Readiness
from app.settings import Settings
from app.tools.approvals import Approval, ApprovalConflict, ApprovalStore, NotReviewable, approval_ref
from app.tools.builtins import KNOWN_TOOLS, builtin_tools
from app.tools.policy import ToolPolicy, load_policy
from app.tools.registry import ToolRegistry, args_hash
from app.tools.runner import GuardedToolRunner
from app.tools.sandbox import DockerSandbox

if TYPE_CHECKING:
    from app.receipts.tracer import Tracer

log = get_logger("tools")

POLICY_NAME = "tool_policy"
WEB_SEARCH_NETWORK_MARGIN_S = 1.0  # the search's own network deadline ends this long before the sandbox's

# The route each operation is recorded under in its receipt, whichever face called it, so that
# receipts read the same from the API, the console or the CLI.
EXECUTE_ROUTE = "/v1/tools/execute"
APPROVE_ROUTE = "/v1/tools/approve"
APPROVE_PENDING_ROUTE = "/v1/tools/approvals/{approval_id}/approve"
DENY_ROUTE = "/v1/tools/approvals/{approval_id}/deny"


@dataclass(slots=True)
class Tools:
    """The tools feature of one app, and the operations its callers use.

    Every operation raises :class:`~app.errors.OrchestratorError` subclasses (404 unknown tool or
    approval, 400 arguments, 409 a decision on an approval in the wrong state, 503 approvals
    database down); a refused call (policy, approval, sandbox) is a result, not an error.
    """

    registry: ToolRegistry
    policy: ToolPolicy
    approvals: ApprovalStore
    sandbox: DockerSandbox
    runner: GuardedToolRunner
    tracer: Tracer
    policies: PolicySnapshot

    def list_tools(self) -> dict[str, Any]:
        """The tools a caller may use: ``tools`` in the OpenAI format, ``data`` how each one runs."""
        runner = self.runner
        specs = runner.available_tools()
        return {
            "object": "list",
            "tools": [spec.openai() for spec in specs],
            "data": [
                {
                    "name": spec.name,
                    "needs_approval": runner.approval_enforce
                    and (spec.needs_approval or self.policy.may_require_approval(spec.name)),
                    "sandboxed": spec.sandboxed,
                    "network": bool(spec.sandbox and spec.sandbox.network),
                }
                for spec in specs
            ],
        }

    def check_call(self, name: str, args: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        """404 for an unknown tool, 400 for arguments that do not fit its schema."""
        if self.registry.get(name) is None:
            raise NotFound(
                f"Unknown tool {name!r} (see GET /v1/tools).", param="name", code=f"unknown_tool:{name}", extra=extra
            )
        problem = self.registry.check_args(name, args)
        if problem is not None:
            raise InvalidRequest(problem.message, param=problem.param, code="validation_error", extra=extra)

    async def execute(
        self, name: str, args: dict[str, Any], *, principal: Principal, request_id: str, approval_token: str | None
    ) -> dict[str, Any]:
        """Run one tool through schema, policy, approval and sandbox, with its receipt:
        ``{"result": {...}, "request_id": <the receipt's id>}``."""
        # The receipt's id is always generated here (never the caller's X-Request-ID), so a caller
        # can not append steps to somebody else's trace.
        trace = self.tracer.begin(
            route=EXECUTE_ROUTE,
            request_id=request_id,
            principal=principal.id,
            stream=False,
            extra={"tool": name, "policy_hash": self.policies.loaded_hash},
        )
        try:
            result = await self.runner.run(name, args, principal=principal, trace=trace, approval_token=approval_token)
        finally:
            trace.end()
        if result.get("approval_reason") == "approvals_unavailable":
            # The approvals database did not answer: the tool was not run (the receipt says so), and
            # the caller gets the status to retry on, as every operation that needs a database does.
            raise DatabaseUnavailable()
        trace_id = result.get("trace_id")
        error = str(result.get("error") or "")
        if error.startswith("unknown_tool:") or error == "validation_error":
            self.check_call(name, args, extra={"request_id": trace_id})
        return {"result": result, "request_id": trace_id}

    def _record_decision(self, approver: Principal, request_id: str, route: str, approval: Approval) -> None:
        """Approvals are decisions too: each one leaves a receipt."""
        trace = self.tracer.begin(route=route, request_id=request_id, principal=approver.id, stream=False, extra=None)
        trace.step(
            "tool_approval_decision",
            {
                # A directly issued token is a bearer capability and receipts are readable by
                # callers: it is named by a hash. A request raised by a caller is bound to that caller.
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

    async def approve(
        self, name: str, args: dict[str, Any], *, approver: Principal, request_id: str, ttl: int | None
    ) -> dict[str, Any]:
        """Issue a single-use approval bound to the tool and these exact arguments."""
        self.check_call(name, args)
        approval = await self.approvals.issue(
            tool=name, args_hash=args_hash(args), args=args, approver=approver.id, ttl=ttl
        )
        self._record_decision(approver, request_id, APPROVE_ROUTE, approval)
        return approval.issued()

    async def pending(self, status: str, limit: int) -> list[Approval]:
        """Approval requests with this status (``all`` for every one), newest first."""
        return await self.approvals.list(status, limit)

    async def get_approval(self, approval_id: str) -> Approval:
        found = await self.approvals.get(approval_id)
        if found is None:
            raise NotFound(f"No approval {approval_id!r}.", param="approval_id", code="unknown_approval")
        return found

    async def approve_pending(
        self, approval_id: str, *, approver: Principal, request_id: str, ttl: int | None
    ) -> dict[str, Any]:
        """pending -> approved, usable once until ``ttl`` seconds from now (by the caller who asked)."""
        decision = self.approvals.approve(approval_id, approver=approver.id, ttl=ttl)
        try:
            return await self._decide(
                approver, request_id, APPROVE_PENDING_ROUTE, decision, allowed="a pending request can be approved"
            )
        except NotReviewable as refused:
            raise InvalidRequest(
                refused.detail, status=409, param="approval_id", code="arguments_not_reviewable"
            ) from None

    async def deny(
        self, approval_id: str, *, approver: Principal, request_id: str, reason: str | None
    ) -> dict[str, Any]:
        """Refuse a pending (or approved, unused) request."""
        decision = self.approvals.deny(approval_id, approver=approver.id, reason=reason)
        return await self._decide(
            approver, request_id, DENY_ROUTE, decision, allowed="a pending or unused approved one can be denied"
        )

    async def _decide(
        self, approver: Principal, request_id: str, route: str, decision: Awaitable[Approval], *, allowed: str
    ) -> dict[str, Any]:
        """Apply a person's decision (the store checks existence and state atomically) and record it."""
        try:
            approval = await decision
        except KeyError as exc:
            raise NotFound(f"No approval {exc.args[0]!r}.", param="approval_id", code="unknown_approval") from None
        except ApprovalConflict as exc:
            raise InvalidRequest(
                f"The approval is {exc.approval.status}; only {allowed}.",
                status=409,
                param="approval_id",
                code="approval_not_pending",
            ) from None
        self._record_decision(approver, request_id, route, approval)
        return approval.listed()

    def add_readiness(self, readiness: Readiness, *, required: bool) -> None:
        """The sandbox's check (optional unless ``required``), and the startup line saying what is
        off and which flag changes that."""
        line = sandbox_startup_line(self.sandbox.enabled, self.sandbox.reason, required=required)
        if line is not None:
            log.log(logging.WARNING if self.sandbox.enabled else logging.INFO, line)
        if self.sandbox.enabled:
            readiness.add("sandbox", self.sandbox.readiness_check, required=required)

    async def aclose(self) -> None:
        await self.sandbox.aclose()


# What a probe's reason means, in the words of the startup line.
_SANDBOX_REASONS = {
    "docker_not_found": "docker not found",
    "docker_unreachable": "docker does not answer",
    "sandbox_image_missing": "the sandbox image is missing: scripts/build_sandbox_image.sh builds it",
    "docker_error": "docker answered with an error",
}


def sandbox_startup_line(enabled: bool, reason: str, *, required: bool) -> str | None:
    """One line for the operator when the sandbox is not usable at startup; None when it is."""
    if not enabled:
        return "sandbox: off (ORCH_TOOL_SANDBOX_ENABLED=0); tools that need it answer sandbox_disabled"
    if reason == "ok":
        return None
    why = _SANDBOX_REASONS.get(reason, reason)
    if required:
        return (
            f"sandbox: unavailable ({why}); /ready answers 503 sandbox_unavailable:{reason} until it is "
            "(ORCH_TOOL_SANDBOX_REQUIRED=1; set it to 0 to stay ready without it)"
        )
    return (
        f"sandbox: off ({why}); tools that need it answer sandbox_unavailable; "
        "set ORCH_TOOL_SANDBOX_REQUIRED=1 to make /ready fail instead"
    )


def register_tool_policy(policies: PolicySnapshot, settings: Settings) -> None:
    """Put the tool policy (and the switches that change its meaning) into the policy snapshot."""
    policies.register(
        POLICY_NAME,
        settings.tool_policy_path,
        enforce=settings.tool_policy_enforce,
        approval_enforce=settings.tool_approval_enforce,
    )


def read_tool_policy(settings: Settings) -> ToolPolicy:
    return load_policy(settings.tool_policy_path, enforce=settings.tool_policy_enforce, known_tools=KNOWN_TOOLS)


def build_registry(settings: Settings) -> ToolRegistry:
    """The tools this configuration registers (no I/O: the startup check uses it too)."""
    registry = ToolRegistry()
    for spec in builtin_tools(
        web_search=settings.tool_web_search_enabled,
        web_search_url=settings.tool_web_search_url,
        network_timeout=max(1.0, settings.sandbox_timeout_sec - WEB_SEARCH_NETWORK_MARGIN_S),
    ):
        registry.register(spec)
    return registry


async def open_tools(settings: Settings, approvals_db: Database, policies: PolicySnapshot, *, tracer: Tracer) -> Tools:
    registry = build_registry(settings)
    policy = read_tool_policy(settings)
    if policy.missing and policy.enforce:
        log.warning(
            "the tool policy file is missing: every tool call is denied (policy_missing)",
            extra={"path": str(settings.tool_policy_path)},
        )
    approvals = ApprovalStore(approvals_db, default_ttl=settings.tool_approval_ttl_sec)
    await approvals.migrate()
    sandbox = DockerSandbox(
        enabled=settings.tool_sandbox_enabled,
        image=settings.sandbox_image,
        memory_mb=settings.sandbox_memory_mb,
        cpus=settings.sandbox_cpu,
        pool_size=settings.sandbox_pool_size,
        docker_url=settings.sandbox_docker_url,
    )
    await sandbox.start()
    runner = GuardedToolRunner(
        registry=registry,
        policy=policy,
        approvals=approvals,
        sandbox=sandbox,
        policies=policies,
        approval_enforce=settings.tool_approval_enforce,
        decisions_in_response=settings.policy_decisions_in_response,
        output_max_chars=settings.tool_output_max_chars,
        scrub_output=settings.tool_output_scrub_enabled,
        sandbox_timeout=settings.sandbox_timeout_sec,
        tracing=tracer.enabled,
    )
    return Tools(registry, policy, approvals, sandbox, runner, tracer, policies)
