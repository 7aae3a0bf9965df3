"""Tools with the real service: startup refusals (one clear line), a sandboxed run through uvicorn
and Docker, and the chat tool loop finishing against the real local model (llama-server)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import ClientSession, web
from fastapi import FastAPI

from tests.api.tools_support import GatewayTools, require_docker
from tests.conftest import running
from tests.e2e.llm import MODEL_ALIAS, LlamaServer
from tests.e2e.server import E2E_TOKEN, ROOT, LiveServer, free_port
from tests.e2e.test_process import run_to_exit

pytestmark = pytest.mark.e2e

APPROVER = "e2e-approver-token-0123456789abcdef"
POLICY = str(ROOT / "policies" / "tool_policy.yaml")


@pytest.mark.parametrize("entry", ["python -m app", "uvicorn app.main:app"])
@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("version: 1\nrules:\n  - id: a\n    tools: [safe_calc]\n    action: alow\n", "line 5 (rules[0].action)"),
        ("version: 1\nrules:\n  - id: a\n    tools: [pyhton_exec]\n    action: deny\n", "unknown tool 'pyhton_exec'"),
        ("version: 1\nrules: [\n", "invalid YAML"),
    ],
)
def test_a_bad_tool_policy_stops_the_service_with_one_line(
    tmp_path: Path, entry: str, policy: str, expected: str
) -> None:
    path = tmp_path / "tool_policy.yaml"
    path.write_text(policy)
    command = (
        [sys.executable, "-m", "app"]
        if entry == "python -m app"
        else [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(free_port())]
    )
    result = run_to_exit(tmp_path, command, {"ORCH_TOOL_POLICY_PATH": str(path)})
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "ORCH_TOOL_POLICY_PATH" in lines[0] and str(path) in lines[0] and expected in lines[0]


def test_an_approver_token_equal_to_the_callers_stops_the_service(tmp_path: Path) -> None:
    result = run_to_exit(tmp_path, [sys.executable, "-m", "app"], {"ORCH_APPROVER_TOKEN": E2E_TOKEN})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ORCH_APPROVER_TOKEN must differ" in lines[0] and E2E_TOKEN not in lines[0]


def test_python_exec_through_the_real_server_and_docker(tmp_path: Path) -> None:
    require_docker()
    env = {"ORCH_TOOL_POLICY_PATH": POLICY, "ORCH_APPROVER_TOKEN": APPROVER, "ORCH_SANDBOX_POOL_SIZE": "1"}
    with LiveServer(tmp_path, env) as server:
        caller = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {E2E_TOKEN}"}, timeout=30)
        approver = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {APPROVER}"}, timeout=30)
        ready = caller.get("/ready").json()
        assert ready["status"] == "ready" and ready["checks"]["sandbox"] == "ok"
        args = {"code": "import sys\nprint(sum(range(10)), sys.version_info[:2])"}
        first = caller.post("/v1/tools/execute", json={"name": "python_exec", "args": args}).json()["result"]
        assert first["error"] == "approval_required" and first["approval_status"] == "pending"
        assert caller.post(f"/v1/tools/approvals/{first['approval_id']}/approve").status_code == 403
        pending = approver.get("/v1/tools/approvals").json()["data"]
        assert [item["approval_id"] for item in pending] == [first["approval_id"]]
        approved = approver.post(f"/v1/tools/approvals/{first['approval_id']}/approve")
        assert approved.status_code == 200
        ran = caller.post(
            "/v1/tools/execute",
            json={"name": "python_exec", "args": args},
            headers={"X-Request-ID": "client-chosen-id"},
        ).json()
        assert ran["result"]["status"] == "ok", ran
        assert ran["result"]["result"]["stdout"] == "45 (3, 11)\n"
        assert ran["request_id"] != "client-chosen-id"
        assert approver.post("/v1/tools/execute", json={"name": "safe_calc", "args": {}}).status_code == 403
    assert "Traceback" not in server.logs()
    assert "print(sum" not in server.logs()  # tool arguments are never logged


# --- the chat tool loop against the real model --------------------------------------------------


@asynccontextmanager
async def first_round_scripted(real_upstream: str, first: dict[str, Any]) -> AsyncIterator[tuple[str, list[Any]]]:
    """An upstream whose FIRST chat answer is scripted (the 135M model does not call tools on its
    own); every later request goes to the real llama-server, unchanged."""
    seen: list[Any] = []

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        if len(seen) == 1:
            return web.json_response(first)
        async with ClientSession() as session, session.post(real_upstream + "/chat/completions", json=body) as answer:
            return web.Response(body=await answer.read(), status=answer.status, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        await runner.cleanup()


async def test_the_tool_loop_finishes_against_the_real_model(
    llama_server: LlamaServer, app_factory: Callable[..., FastAPI]
) -> None:
    scripted = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL_ALIAS,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_real_1",
                            "type": "function",
                            "function": {"name": "safe_calc", "arguments": '{"expression": "6*7"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    async with first_round_scripted(llama_server.openai_url, scripted) as (url, seen):
        app = app_factory(
            llm_enabled=True, llm_provider="openai", openai_base_url=url, model_chat=MODEL_ALIAS, llm_timeout_sec=60
        )
        async with running(app) as client:
            app.state.orch.orchestrator.stages.append(GatewayTools(["safe_calc"]))
            response = await client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "What is 6 times 7?"}], "max_tokens": 24},
                timeout=120,
            )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tool_result"]["status"] == "ok" and body["tool_result"]["result"] == 42
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    # the real model was given the whole conversation: the call and its result, in OpenAI's shape
    second = seen[1]
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "tool"]
    assert json.loads(second["messages"][2]["content"])["result"] == 42
    assert [t["function"]["name"] for t in second["tools"]] == ["safe_calc"]
