"""Advanced mode with the real tool runner (no doubles): the router policy and the tool guard
together. A routed tool runs through the schema check, the tool policy, the approvals and the
Docker sandbox exactly as ``/v1/tools/execute`` would, and its receipt records both decisions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.lifespan import AppState, StartupError
from app.providers.demo import DEMO_HEADER
from app.settings import SHIPPED_ROUTER_POLICY
from tests.api.tools_support import APPROVER, APPROVER_HEADERS, require_docker, write_policy
from tests.conftest import running

CHAT = "/v1/chat/completions"

# The shipped policy plus one rule that sends "run python: <code>" to the sandboxed tool.
CODE_RULE = """\
  - id: code.run
    description: the user asks to have a Python snippet run
    when:
      message: '^run python:\\s*(?P<code>(?s:\\S.*))$'
    target:
      tool: python_exec
    confidence: 0.95
    reason: code_command
"""


def router_policy(tmp_path: Path, extra_rules: str = CODE_RULE) -> Path:
    shipped = SHIPPED_ROUTER_POLICY.read_text()
    return write_policy(tmp_path, shipped.replace("rules:\n", "rules:\n" + extra_rules, 1), "router_policy.yaml")


def ask(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


@asynccontextmanager
async def advanced(
    app_factory: Callable[..., FastAPI], tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    values: dict[str, Any] = {
        "orchestrator_mode": "advanced",
        "router_policy_path": str(router_policy(tmp_path)),
        "approver_token": APPROVER,
        "trust_panel_enabled": True,
    }
    values.update(settings)
    app = app_factory(**values)
    async with running(app) as client:
        yield client, app.state.orch


async def chat(client: httpx.AsyncClient, text: str) -> dict[str, Any]:
    response = await client.post(CHAT, json=ask(text))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def answer(body: dict[str, Any]) -> str:
    text: str = body["choices"][0]["message"]["content"]
    return text


async def step_types(client: httpx.AsyncClient, state: AppState, trace_id: str) -> list[str]:
    await state.tracer.flush()
    steps = (await client.get(f"/v1/trust/trace/{trace_id}")).json()["steps"]
    return [step["step_type"] for step in steps]


async def test_routed_builtins_run_for_real(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    async with advanced(app_factory, tmp_path) as (client, state):
        calc = await chat(client, "calculate 2 + 2")
        assert answer(calc) == "Tool [safe_calc] result: 4"
        assert calc["tool_result"]["status"] == "ok" and calc["tool_result"]["result"] == 4
        assert calc["route_decision"]["action"] == "ran"
        assert answer(await chat(client, "what is 2**10/4?")) == "Tool [safe_calc] result: 256"
        assert answer(await chat(client, "echo hello there")) == "Tool [echo] result: Echo: hello there"
        summary = await chat(client, "summarize: First point. Second point. Third point.")
        assert summary["tool_result"]["result"]["summary"].startswith("First point.")
        for text in ("I have 3 cats", "Call 555-123-4567", "calculate my taxes for 2023"):
            body = await chat(client, text)
            assert answer(body).startswith(DEMO_HEADER), text
            assert body["tool_result"] is None
        types = await step_types(client, state, calc["request_id"])
    # the tool guard's own steps sit in the same receipt as the routing decision
    assert types[0] == "request" and "route_decision" in types
    assert "policy_snapshot" in types and "tool_result" in types
    assert calc["tool_result"]["trace_id"] == calc["request_id"]


async def test_a_routed_tool_the_policy_denies_never_runs(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    deny_calc = "version: 1\nrules:\n  - id: no_calc\n    tools: [safe_calc]\n    action: deny\n    reason: no_math\n"
    policy = write_policy(tmp_path, deny_calc)
    async with advanced(app_factory, tmp_path, tool_policy_path=str(policy)) as (client, _):
        body = await chat(client, "calculate 2 + 2")
    assert body["tool_result"]["status"] == "error"
    assert body["route_decision"]["action"] == "failed"
    assert answer(body).startswith("Tool error (safe_calc):")
    assert "4" not in answer(body)


async def test_a_routed_sandbox_tool_waits_for_approval_then_runs_in_docker(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    require_docker()
    async with advanced(app_factory, tmp_path) as (client, state):
        held = await chat(client, "run python: print(6 * 7)")
        assert held["route_decision"]["action"] == "approval_required"
        approval_id = held["tool_result"]["approval_id"]
        assert approval_id in answer(held) and "approve" in answer(held)
        # the caller cannot approve their own call; the approver can
        own = await client.post(f"/v1/tools/approvals/{approval_id}/approve")
        assert own.status_code == 403
        approved = await client.post(f"/v1/tools/approvals/{approval_id}/approve", headers=APPROVER_HEADERS)
        assert approved.status_code == 200, approved.text
        ran = await chat(client, "run python: print(6 * 7)")
        assert ran["route_decision"]["action"] == "ran", ran["tool_result"]
        assert ran["tool_result"]["result"]["stdout"] == "42\n"
        # single use: the next identical request waits for a new approval
        again = await chat(client, "run python: print(6 * 7)")
        assert again["route_decision"]["action"] == "approval_required"
        assert again["tool_result"]["approval_id"] != approval_id
        types = await step_types(client, state, ran["request_id"])
    assert "tool_approval" in types and "tool_result" in types


async def test_a_router_policy_naming_an_unregistered_tool_stops_startup(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    # web_search is registered only with ORCH_TOOL_WEB_SEARCH_ENABLED=1
    rule = "  - id: search\n    when: {message: '^search (?P<query>.+)$'}\n    target: {tool: web_search}\n"
    app = app_factory(orchestrator_mode="advanced", router_policy_path=str(router_policy(tmp_path, rule)))
    with pytest.raises(StartupError, match="web_search"):
        async with running(app):
            pass
