"""Helpers for the tools tests: the approver's token, policies written to tmp_path, the Docker check."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.orchestrator.turn import Turn

APPROVER = "test-approver-token-9876543210"
APPROVER_HEADERS = {"Authorization": f"Bearer {APPROVER}"}
EXECUTE = "/v1/tools/execute"
APPROVE = "/v1/tools/approve"
IMAGE = "orchestrators-sandbox:1"

# safe_calc needs approval here: approvals can be tested without Docker.
APPROVAL_POLICY = """\
version: 1
rules:
  - id: calc_needs_approval
    tools: [safe_calc]
    action: require_approval
    reason: test_approval
  - id: allow_text_tools
    tools: [echo, summarize_text, text_stats]
    action: allow
  - id: python_exec_with_approval
    tools: [python_exec, web_search]
    action: require_approval
"""


def write_policy(tmp_path: Path, text: str, name: str = "tool_policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


async def execute(client: httpx.AsyncClient, name: str, args: Any = None, **extra: Any) -> dict[str, Any]:
    """POST /v1/tools/execute; returns the ``result`` object of a 200."""
    body: dict[str, Any] = {"name": name, **extra}
    if args is not None:
        body["args"] = args
    response = await client.post(EXECUTE, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


async def approve(client: httpx.AsyncClient, name: str, args: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """POST /v1/tools/approve with the approver's token; returns the issued approval."""
    response = await client.post(APPROVE, json={"name": name, "args": args, **extra}, headers=APPROVER_HEADERS)
    assert response.status_code == 200, response.text
    approval: dict[str, Any] = response.json()
    return approval


async def run_approved(client: httpx.AsyncClient, name: str, args: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Approve, then execute with the token."""
    token = (await approve(client, name, args))["approval_id"]
    return await execute(client, name, args, approval_token=token, **extra)


class GatewayTools:
    """A test stage that gives the turn gateway tools (what an agent does)."""

    name = "test_gateway_tools"

    def __init__(self, tools: list[str]) -> None:
        self.tools = tools

    async def run(self, turn: Turn) -> None:
        turn.gateway_tools = list(self.tools)


def require_docker() -> None:
    """The sandbox tests run against the real engine: fail (never skip) when it is missing."""
    hint = "run `make test-deps` (scripts/ensure_docker.sh and scripts/build_sandbox_image.sh)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"Docker is required for the sandbox tests ({exc}); {hint}", pytrace=False)
    if info.returncode != 0:
        pytest.fail(f"Docker is required for the sandbox tests: {info.stderr.strip()[-300:]}; {hint}", pytrace=False)
    image = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, timeout=20, check=False)
    if image.returncode != 0:
        pytest.fail(f"the sandbox image {IMAGE} is missing; {hint}", pytrace=False)


def containers(instance: str, *, all_states: bool = True) -> list[str]:
    """Status lines of this app's sandbox containers (docker ps, by the instance label)."""
    command = [
        "docker",
        "ps",
        "--format",
        "{{.Status}}",
        "--filter",
        f"label=org.orchestrators.sandbox.instance={instance}",
    ]
    if all_states:
        command.insert(2, "-a")
    out = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]
