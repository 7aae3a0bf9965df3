"""/v1/tools and /v1/tools/execute over HTTP (in-process): listing, running safe tools, every
refusal with its reason code, output scrubbing and caps, and the receipts each call leaves."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from app.lifespan import AppState
from tests.api.tools_support import APPROVAL_POLICY, APPROVER, APPROVER_HEADERS, EXECUTE, execute, write_policy
from tests.conftest import assert_envelope, running

TOOLS = "/v1/tools"


async def receipt(client: httpx.AsyncClient, state: AppState, trace_id: str) -> list[dict[str, Any]]:
    await state.tracer.flush()
    response = await client.get(f"/v1/trust/trace/{trace_id}")
    assert response.status_code == 200, response.text
    steps: list[dict[str, Any]] = response.json()["steps"]
    return steps


async def test_list_tools_in_the_openai_format(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory()) as client:
        body = (await client.get(TOOLS)).json()
    names = [tool["function"]["name"] for tool in body["tools"]]
    assert names == ["echo", "safe_calc", "summarize_text", "text_stats", "python_exec"]
    for tool in body["tools"]:
        assert tool["type"] == "function" and set(tool["function"]) == {"name", "description", "parameters"}
        assert tool["function"]["parameters"]["type"] == "object"
    details = {item["name"]: item for item in body["data"]}
    assert details["python_exec"] == {
        "name": "python_exec",
        "needs_approval": True,
        "sandboxed": True,
        "network": False,
    }
    assert details["safe_calc"]["needs_approval"] is False


async def test_the_list_follows_the_policy_and_the_switches(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    only_calc = write_policy(tmp_path, "version: 1\nrules:\n  - id: c\n    tools: [safe_calc]\n    action: allow\n")
    async with running(app_factory(tool_policy_path=only_calc)) as client:
        names = [t["function"]["name"] for t in (await client.get(TOOLS)).json()["tools"]]
    assert names == ["safe_calc"]
    async with running(app_factory(tool_sandbox_enabled=False, tool_web_search_enabled=True)) as client:
        names = [t["function"]["name"] for t in (await client.get(TOOLS)).json()["tools"]]
    assert names == ["echo", "safe_calc", "summarize_text", "text_stats"]  # nothing that can not run
    async with running(app_factory(tool_web_search_enabled=True)) as client:
        body = (await client.get(TOOLS)).json()
    search = next(item for item in body["data"] if item["name"] == "web_search")
    assert search == {"name": "web_search", "needs_approval": True, "sandboxed": True, "network": True}
    async with running(app_factory(), token=None) as client:
        assert_envelope(await client.get(TOOLS), 401, type_="authentication_error")


async def test_safe_calc_over_http(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory()) as client:
        result = await execute(client, "safe_calc", {"expression": "2**10/4"})
        assert result["status"] == "ok" and result["tool"] == "safe_calc"
        assert result["result"] == 256 and isinstance(result["result"], int)
        assert result["truncated"] is False and len(result["trace_id"]) == 36
        refused = await execute(client, "safe_calc", {"expression": "1/0"})
        assert refused["status"] == "error" and refused["error"] == "division_by_zero"
        injected = await execute(client, "safe_calc", {"expression": "__import__('os').system('id')"})
        assert injected["error"] == "unsupported_expression"
        # integers past 64 bits (up to 4096 are allowed) come back as their decimal text
        assert (await execute(client, "safe_calc", {"expression": "2**64"}))["result"] == str(2**64)
        assert (await execute(client, "safe_calc", {"expression": "-(2**63)-1"}))["result"] == str(-(2**63) - 1)
        assert (await execute(client, "safe_calc", {"expression": "2**63-1"}))["result"] == 2**63 - 1


async def test_the_other_safe_tools(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory()) as client:
        summary = await execute(client, "summarize_text", {"text": "One. Two. Three. Four."})
        assert summary["result"]["summary"] == "One. Two. Three."
        stats = await execute(client, "text_stats", {"text": "Hello world"})
        assert stats["result"]["words"] == 2 and stats["result"]["token_estimate"] >= 2
        echo = await execute(client, "echo", {"message": "hi"})
        assert echo["result"] == "Echo: hi"


async def test_missing_name_unknown_tool_and_bad_arguments(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory()) as client:
        error = assert_envelope(await client.post(EXECUTE, json={"args": {}}), 400, param="name")
        assert error["code"] == "validation_error" and error["message"] == "Tool name required."
        off = await client.post(EXECUTE, json={"name": "web_search", "args": {"query": "x"}})
        assert assert_envelope(off, 404)["code"] == "unknown_tool:web_search"  # ORCH_TOOL_WEB_SEARCH_ENABLED=0
        response = await client.post(EXECUTE, json={"name": "nope", "args": {}})
        error = assert_envelope(response, 404, type_="not_found_error", param="name")
        assert error["code"] == "unknown_tool:nope"
        assert len(response.json()["request_id"]) == 36  # the refusal has a receipt too
        error = assert_envelope(await client.post(EXECUTE, json={"name": "safe_calc", "args": {}}), 400)
        assert error["code"] == "validation_error" and error["param"] == "args"
        assert "expression" in error["message"]
        response = await client.post(EXECUTE, json={"name": "safe_calc", "args": {"expression": "1", "trace_id": "x"}})
        error = assert_envelope(response, 400, param="args.trace_id")
        assert error["code"] == "validation_error"
        # args that are not an object (the original crashed with 500, bug B7)
        for args in ([1, 2], "1+1", 5):
            error = assert_envelope(await client.post(EXECUTE, json={"name": "safe_calc", "args": args}), 400)
            assert (error["code"], error["param"]) == ("validation_error", "args")
        for body in ({"name": "safe_calc", "args": {"expression": "1"}, "extra": 1}, {"name": "../etc"}):
            error = assert_envelope(await client.post(EXECUTE, json=body), 400, type_="invalid_request_error")
            assert error["code"] == "validation_error"
        assert_envelope(await client.post(EXECUTE, content=b"[1]"), 400)
        assert_envelope(await client.post(EXECUTE, content=b"{not json"), 400)
        deep = b'{"name": "echo", "args": {"message": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}}"
        error = assert_envelope(await client.post(EXECUTE, content=deep), 400, param="args")
        assert "nested" in error["message"]
        # nothing broke: the tool still answers
        assert (await execute(client, "safe_calc", {"expression": "1+1"}))["result"] == 2


async def test_policy_denial_and_decisions_in_response(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path,
        "version: 1\nrules:\n  - id: calc_short\n    tools: [safe_calc]\n    action: allow\n"
        "    when:\n      expression: {max_length: 5}\n"
        "  - id: no_stats\n    tools: [text_stats]\n    action: deny\n    reason: not_here\n",
    )
    async with running(app_factory(tool_policy_path=policy)) as client:
        denied = await execute(client, "text_stats", {"text": "a"})
        assert denied["error"] == "policy_denied:not_here" and denied["policy_rule"] == "no_stats"
        assert "policy_decision" not in denied
        failed = await execute(client, "safe_calc", {"expression": "1+1+1+1"})
        assert failed["error"] == "policy_denied:condition_failed" and failed["policy_rule"] == "calc_short"
        default = await execute(client, "echo", {"message": "x"})
        assert default["error"] == "policy_denied:default_deny" and default["policy_rule"] is None
    async with running(app_factory(tool_policy_path=policy, policy_decisions_in_response=True)) as client:
        denied = await execute(client, "text_stats", {"text": "a"})
        assert denied["policy_decision"] == {
            "allowed": False,
            "action": "deny",
            "rule": "no_stats",
            "reason": "not_here",
        }
        ok = await execute(client, "safe_calc", {"expression": "1+1"})
        assert ok["status"] == "ok" and ok["policy_decision"]["allowed"] is True
    async with running(app_factory(tool_policy_path=policy, tool_policy_enforce=False)) as client:
        assert (await execute(client, "text_stats", {"text": "a"}))["status"] == "ok"


async def test_a_missing_policy_file_denies_every_tool_but_the_service_runs(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    async with running(app_factory(tool_policy_path=tmp_path / "absent.yaml")) as client:
        result = await execute(client, "safe_calc", {"expression": "1"})
        assert result["error"] == "policy_denied:policy_missing"
        assert (await client.get(TOOLS)).json()["tools"] == []
        chat = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200


async def test_output_is_scrubbed_and_capped(app_factory: Callable[..., FastAPI]) -> None:
    secret = "Bearer abcdefghijklmnopqrstuvwxyz0123456789 and sk-" + "A" * 30 + "\x1b[31m"
    async with running(app_factory(tool_output_max_chars=100)) as client:
        echoed = await execute(client, "echo", {"message": secret})
        assert "abcdefghijklmnop" not in echoed["result"] and "sk-AAAA" not in echoed["result"]
        assert "[REDACTED]" in echoed["result"] and "\x1b" not in echoed["result"]
        long = await execute(client, "echo", {"message": "x" * 5000})
        assert long["truncated"] is True and len(long["result"]) == 100
        summary = await execute(client, "summarize_text", {"text": "y" * 500 + ".", "max_sentences": 1})
        assert summary["truncated"] is True and len(summary["result"]["summary"]) == 100  # dicts are capped too
    async with running(app_factory(tool_output_scrub_enabled=False, tool_output_max_chars=100_000)) as client:
        raw = await execute(client, "echo", {"message": secret})
        assert "abcdefghijklmnop" in raw["result"] and raw["truncated"] is False


async def test_receipts_of_a_tool_call_and_server_generated_trace_ids(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    app = app_factory(trust_panel_enabled=True)
    async with running(app) as client:
        state: AppState = app.state.orch
        victim = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        victim_id = victim.json()["request_id"]
        # A caller naming someone else's trace in X-Request-ID gets its own, new trace (bug S4).
        response = await client.post(
            EXECUTE, json={"name": "safe_calc", "args": {"expression": "6*7"}}, headers={"X-Request-ID": victim_id}
        )
        result = response.json()["result"]
        assert result["trace_id"] != victim_id and response.json()["request_id"] == result["trace_id"]
        steps = await receipt(client, state, result["trace_id"])
        assert [s["step_type"] for s in steps] == ["request", "policy_snapshot", "tool_result"]
        request, policy, outcome = (s["payload"] for s in steps)
        assert request["route"] == EXECUTE and request["request_id"] == victim_id and request["tool"] == "safe_calc"
        assert policy == {
            "tool": "safe_calc",
            "policy_hash": state.policies.loaded_hash,
            "policy_enforced": True,
            "decision": "allow",
            "rule": "allow_safe_builtins",
            "reason": "safe_builtin",
            "args_hash": policy["args_hash"],
        }
        assert (
            outcome["status"] == "ok" and outcome["sandboxed"] is False and outcome["args_hash"] == policy["args_hash"]
        )
        assert outcome["output_sha256"] == hashlib.sha256(orjson.dumps(42)).hexdigest()
        victim_steps = await receipt(client, state, victim_id)
        assert [s["step_type"] for s in victim_steps] == ["request", "llm_provider"]  # untouched
        # /v1/audit/verify works on the tool policy
        audit = (await client.post("/v1/audit/verify", json={"trace_id": result["trace_id"]})).json()
        assert audit["valid"] is True and audit["policy_hash_trace"] == state.policies.loaded_hash
        assert "tool_policy" in audit["policy"]["documents"]
        flags = audit["policy"]["flags"]
        assert flags["tool_policy.enforce"] is True and flags["tool_policy.approval_enforce"] is True


async def test_audit_notices_a_changed_tool_policy(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    path = write_policy(tmp_path, APPROVAL_POLICY)
    app = app_factory(trust_panel_enabled=True, tool_policy_path=path)
    async with running(app) as client:
        trace_id = (await execute(client, "echo", {"message": "x"}))["trace_id"]
        await app.state.orch.tracer.flush()
        assert (await client.post("/v1/audit/verify", json={"trace_id": trace_id})).json()["valid"] is True
        path.write_text(APPROVAL_POLICY + "  - id: extra\n    tools: [text_stats]\n    action: deny\n")
        audit = (await client.post("/v1/audit/verify", json={"trace_id": trace_id})).json()
    assert audit["valid"] is False and audit["policy_hash_current"] != audit["policy_hash_trace"]


async def test_the_approver_token_is_refused_on_caller_routes(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory(approver_token=APPROVER)) as client:
        for method, path, body in (
            ("POST", EXECUTE, {"name": "safe_calc", "args": {"expression": "1"}}),
            ("GET", TOOLS, None),
            ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
            ("POST", "/echo", {"message": "x"}),
        ):
            response = await client.request(method, path, json=body, headers=APPROVER_HEADERS)
            error = assert_envelope(response, 403, type_="permission_error")
            assert error["code"] == "approver_token_not_allowed"
