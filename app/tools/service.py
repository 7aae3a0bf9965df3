"""Wiring of the tools feature for the lifespan: registry, tool policy, approvals, sandbox, runner."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.db.connection import Database
from app.observability.logging import get_logger
from app.policies import PolicySnapshot
from app.readiness import Readiness
from app.settings import Settings
from app.tools.approvals import ApprovalStore
from app.tools.builtins import KNOWN_TOOLS, builtin_tools
from app.tools.policy import ToolPolicy, load_policy
from app.tools.registry import ToolRegistry
from app.tools.runner import GuardedToolRunner
from app.tools.sandbox import DockerSandbox

log = get_logger("tools")

POLICY_NAME = "tool_policy"
WEB_SEARCH_NETWORK_MARGIN_S = 1.0  # the search's own network deadline ends this long before the sandbox's


@dataclass(slots=True)
class Tools:
    """The tools feature of one app."""

    registry: ToolRegistry
    policy: ToolPolicy
    approvals: ApprovalStore
    sandbox: DockerSandbox
    runner: GuardedToolRunner

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


async def open_tools(settings: Settings, approvals_db: Database, policies: PolicySnapshot, *, tracing: bool) -> Tools:
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
        tracing=tracing,
    )
    return Tools(registry, policy, approvals, sandbox, runner)
