"""The guard every tool call goes through (implements :class:`app.tools.types.ToolRunner`).

Order, each step recorded in the caller's receipt:

1. the tool exists (``unknown_tool:<name>``) and its arguments fit its schema (``validation_error``);
2. the tool policy decides (``policy_snapshot`` step; ``policy_denied:<reason>``);
3. a sandboxed tool needs a usable sandbox (``sandbox_unavailable`` / ``sandbox_disabled``), checked
   before an approval is spent;
4. an approval, when the tool or the policy asks for one (``tool_approval`` step;
   ``approval_required`` with ``approval_reason``): a presented token is consumed atomically; without
   one, an approved request this caller raised for the same call is used, else a request is left
   pending for a person and its ``approval_id`` returned;
5. the tool runs (in the service, or in the sandbox) and its output is scrubbed of credentials and
   capped (``tool_result`` step, with the SHA-256 of the output returned).

A refused or failed call is a result (``{"status": "error", "error": <reason code>, ...}``),
never an exception.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

import orjson

from app.auth import Principal
from app.observability.logging import get_logger
from app.policies import PolicySnapshot
from app.receipts.steps import ToolApprovalStep, ToolResultStep
from app.receipts.tracer import Trace
from app.scrub import cap_text, redact_text
from app.timefmt import iso_utc
from app.tools.approvals import ApprovalStore, NotReviewable, TooManyPending, approval_ref
from app.tools.policy import REQUIRE_APPROVAL, Decision, ToolPolicy
from app.tools.registry import ToolFailure, ToolRegistry, ToolSpec, args_hash
from app.tools.sandbox import SandboxJob, SandboxOutcome, SandboxUnavailable, ToolSandbox
from app.tools.types import ToolResult

log = get_logger("tools")

MAX_LIST_ITEMS = 100  # items kept of any list in a tool's output
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # keeps \t \n \r
_NAME_IN_RECEIPT = 64  # an unknown tool's name is caller text: bounded in receipts


class GuardedToolRunner:
    """Registry -> schema -> policy -> sandbox check -> approval -> run -> scrub and cap."""

    def __init__(
        self,
        *,
        registry: ToolRegistry,
        policy: ToolPolicy,
        approvals: ApprovalStore,
        sandbox: ToolSandbox,
        policies: PolicySnapshot,
        approval_enforce: bool,
        decisions_in_response: bool,
        output_max_chars: int,
        scrub_output: bool,
        sandbox_timeout: float,
        tracing: bool,
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.approvals = approvals
        self.sandbox = sandbox
        self.policies = policies
        self.approval_enforce = approval_enforce
        self.decisions_in_response = decisions_in_response
        self.output_max_chars = output_max_chars
        self.scrub_output = scrub_output
        self.sandbox_timeout = sandbox_timeout
        self.tracing = tracing

    # --- what may be offered -----------------------------------------------------------------
    def offerable(self, spec: ToolSpec) -> bool:
        """Listed to callers and models: the policy could allow some call, and it can run here."""
        return self.policy.may_offer(spec.name) and (not spec.sandboxed or self.sandbox.enabled)

    def available_tools(self) -> list[ToolSpec]:
        return [spec for spec in self.registry.specs() if self.offerable(spec)]

    def tool_names(self) -> frozenset[str]:
        return frozenset(self.registry.names())

    def openai_tools(self, names: list[str]) -> list[dict[str, Any]]:
        """The named tools in the OpenAI ``tools`` format (unknown or never-allowed names are left out)."""
        tools = []
        for name in names:
            spec = self.registry.get(name)
            if spec is not None and self.offerable(spec):
                tools.append(spec.openai())
        return tools

    def needs_approval(self, spec: ToolSpec, decision: Decision) -> bool:
        return self.approval_enforce and (spec.needs_approval or decision.action == REQUIRE_APPROVAL)

    # --- running -----------------------------------------------------------------------------
    async def run(
        self,
        name: str,
        args: dict[str, Any],
        *,
        principal: Principal,
        trace: Trace,
        approval_token: str | None = None,
    ) -> ToolResult:
        started = time.perf_counter()
        trace_id = trace.id if self.tracing else None
        spec = self.registry.get(name)
        if spec is None:
            trace.step("tool_result", {"tool": name[:_NAME_IN_RECEIPT], "status": "error", "error": "unknown_tool"})
            return {"status": "error", "error": f"unknown_tool:{name}", "trace_id": trace_id}
        problem = self.registry.check_args(name, args)
        if problem is not None:
            trace.step(
                "tool_result", {"tool": name, "status": "error", "error": "validation_error", "param": problem.param}
            )
            return {
                "status": "error",
                "tool": name,
                "error": "validation_error",
                "detail": problem.message,
                "param": problem.param,
                "trace_id": trace_id,
            }
        digest = args_hash(args)
        decision = self.policy.decide(name, args)
        trace.step(
            "policy_snapshot",
            {
                "tool": name,
                "policy_hash": self.policies.loaded_hash,
                "policy_enforced": self.policy.enforce,
                "decision": decision.action,
                "rule": decision.rule,
                "reason": decision.reason,
                "args_hash": digest,
            },
        )
        extra: dict[str, Any] = {"trace_id": trace_id}
        if self.decisions_in_response:
            extra["policy_decision"] = decision.as_dict()

        def refused(error: str, **fields: Any) -> ToolResult:
            step: ToolResultStep = {"tool": name, "status": "error", "error": error, "args_hash": digest}
            if "approval_reason" in fields:
                step["approval_reason"] = fields["approval_reason"]
            if "exit_code" in fields:
                step["exit_code"] = fields["exit_code"]
            trace.step("tool_result", step)
            return {"status": "error", "tool": name, "error": error, **fields, **extra}

        if not decision.allowed:
            return refused(f"policy_denied:{decision.reason}", policy_rule=decision.rule)
        if spec.sandboxed:
            try:
                await self.sandbox.ensure()
            except SandboxUnavailable as exc:
                error = "sandbox_disabled" if exc.reason == "sandbox_disabled" else "sandbox_unavailable"
                return refused(error, detail=_sandbox_detail(exc.reason))
        if self.needs_approval(spec, decision):
            approval = await self._approval(
                spec, digest, args=args, principal=principal, trace=trace, token=approval_token
            )
            if approval is not None:
                return refused("approval_required", **approval)
        result = await self._execute(spec, args)
        result.update(extra)
        output_hash = hashlib.sha256(orjson.dumps(result.get("result"), option=orjson.OPT_SORT_KEYS)).hexdigest()
        done: ToolResultStep = {
            "tool": name,
            "status": result["status"],
            "error": result.get("error"),
            "args_hash": digest,
            "sandboxed": spec.sandboxed,
            "truncated": result.get("truncated", False),
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "output_sha256": output_hash,
        }
        if "exit_code" in result:
            done["exit_code"] = result["exit_code"]
        trace.step("tool_result", done)
        return result

    async def _approval(
        self,
        spec: ToolSpec,
        digest: str,
        *,
        args: dict[str, Any],
        principal: Principal,
        trace: Trace,
        token: str | None,
    ) -> dict[str, Any] | None:
        """None when the call is approved (and the approval spent), else the refusal's fields."""
        trace_id = trace.id if self.tracing else None
        try:
            if token:
                used = await self.approvals.consume(
                    token, tool=spec.name, args_hash=digest, principal=principal.id, trace_id=trace_id
                )
                found = used.approval is not None
                trace.step(
                    "tool_approval",
                    {
                        "tool": spec.name,
                        "approved": used.ok,
                        "reason": used.reason,
                        # A refused token may still be live: receipts name it by a hash, not its value.
                        "approval_id": token if used.ok else None,
                        "approval_ref": approval_ref(token) if found else None,
                        "expires_at": iso_utc(used.approval.expires_at) if used.approval else None,
                    },
                )
                return None if used.ok else {"approval_reason": used.reason}
            own = await self.approvals.consume_own(
                tool=spec.name, args_hash=digest, principal=principal.id, trace_id=trace_id
            )
            if own is not None:
                trace.step(
                    "tool_approval",
                    {"tool": spec.name, "approved": True, "reason": "approved", "approval_id": own.approval_id},
                )
                return None
            try:
                pending = await self.approvals.request(
                    tool=spec.name, args_hash=digest, args=args, principal=principal.id, trace_id=trace_id
                )
            except TooManyPending:
                trace.step("tool_approval", {"tool": spec.name, "approved": False, "reason": "too_many_pending"})
                return {
                    "approval_reason": "too_many_pending",
                    "detail": "Too many of your approval requests are waiting for a person.",
                }
            except NotReviewable as refused:
                reason = "arguments_not_reviewable"
                step: ToolApprovalStep = {"tool": spec.name, "approved": False, "reason": reason, "why": refused.why}
                trace.step("tool_approval", step)
                return {"approval_reason": reason, "detail": refused.detail}
        except Exception as exc:
            log.error("approval store failed", extra={"error_type": type(exc).__name__})
            trace.step("tool_approval", {"tool": spec.name, "approved": False, "reason": "approvals_unavailable"})
            return {"approval_reason": "approvals_unavailable"}
        trace.step(
            "tool_approval",
            {
                "tool": spec.name,
                "approved": False,
                "reason": "missing_approval",
                "approval_id": pending.approval_id,
                "approval_status": pending.status,
                "expires_at": iso_utc(pending.expires_at),
            },
        )
        return {
            "approval_reason": "missing_approval",
            "approval_id": pending.approval_id,
            "approval_status": pending.status,
            "expires_at": iso_utc(pending.expires_at),
        }

    async def _execute(self, spec: ToolSpec, args: dict[str, Any]) -> ToolResult:
        truncated = False
        try:
            if spec.sandbox is not None:
                outcome = await self._sandboxed(spec, args)
                truncated = outcome.truncated
                value = spec.sandbox.interpret(outcome)
            else:
                assert spec.handler is not None
                value = spec.handler(args)
        except ToolFailure as failure:
            extra, cut = self._shape(failure.extra)
            detail, cut_detail = self._shape(failure.detail)
            result: ToolResult = {"status": "error", "tool": spec.name, "error": failure.code}
            if detail:
                result["detail"] = detail
            result.update(extra)
            result["truncated"] = bool(extra.get("truncated")) or truncated or cut or cut_detail
            return result
        except SandboxUnavailable as exc:
            return {"status": "error", "tool": spec.name, "error": "sandbox_unavailable", "detail": exc.reason}
        except Exception as exc:
            # The exception's text may quote the arguments: the type is logged, nothing is returned.
            log.error("tool failed", extra={"tool": spec.name, "error_type": type(exc).__name__})
            return {"status": "error", "tool": spec.name, "error": "tool_failed", "truncated": False}
        shaped, cut = self._shape(value)
        return {"status": "ok", "tool": spec.name, "result": shaped, "truncated": truncated or cut}

    async def _sandboxed(self, spec: ToolSpec, args: dict[str, Any]) -> SandboxOutcome:
        assert spec.sandbox is not None
        payload = orjson.dumps(spec.sandbox.payload(args))
        job = SandboxJob(
            program=spec.sandbox.source,
            stdin=payload,
            network=spec.sandbox.network,
            timeout=self.sandbox_timeout,
            # bytes kept per stream: a character is at most 4 bytes of UTF-8
            output_bytes=self.output_max_chars * 4,
        )
        outcome = await self.sandbox.run(job)
        partial = {"stdout": outcome.stdout, "stderr": outcome.stderr}
        if outcome.timed_out:
            raise ToolFailure(
                "sandbox_timeout",
                f"The program was stopped after {self.sandbox_timeout:g} s (ORCH_SANDBOX_TIMEOUT_SEC).",
                {"result": partial},
            )
        if outcome.output_limited:
            raise ToolFailure(
                "output_limit",
                "The program printed far more than the output cap and was stopped.",
                {"result": partial, "truncated": True},
            )
        if outcome.memory_killed:
            raise ToolFailure(
                "sandbox_memory_limit",
                f"The program was killed at the memory limit ({self.sandbox.memory_mb} MB, ORCH_SANDBOX_MEMORY_MB).",
                {"exit_code": outcome.exit_code, "result": partial},
            )
        return outcome

    # --- output ------------------------------------------------------------------------------
    def _shape(self, value: Any) -> tuple[Any, bool]:
        """Scrub credentials and control characters from every string, cap strings and lists."""
        if isinstance(value, str):
            if self.scrub_output:
                value = _CONTROL.sub(" ", redact_text(value, pii=False)[0])
            return cap_text(value, self.output_max_chars)
        if isinstance(value, dict):
            cut = False
            shaped: dict[str, Any] = {}
            for key, item in value.items():
                shaped[key], item_cut = self._shape(item)
                cut = cut or item_cut
            return shaped, cut
        if isinstance(value, list | tuple):
            items = []
            cut = len(value) > MAX_LIST_ITEMS
            for item in list(value)[:MAX_LIST_ITEMS]:
                shaped_item, item_cut = self._shape(item)
                items.append(shaped_item)
                cut = cut or item_cut
            return items, cut
        return value, False


def _sandbox_detail(reason: str) -> str:
    return {
        "sandbox_disabled": "The sandbox is off (ORCH_TOOL_SANDBOX_ENABLED=0).",
        "docker_not_found": "No Docker engine found (no socket, no DOCKER_HOST / ORCH_SANDBOX_DOCKER_URL).",
        "docker_unreachable": "The Docker engine does not answer.",
        "sandbox_image_missing": "The sandbox image is missing (ORCH_SANDBOX_IMAGE; scripts/build_sandbox_image.sh).",
    }.get(reason, reason)
