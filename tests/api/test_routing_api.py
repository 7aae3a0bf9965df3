"""Advanced mode over HTTP (in-process): rule routing to a tool (through a recording ToolRunner
double), digits that are not math, agents by metadata, debug exposure, receipts, the review queue
and its API on SQLite and Postgres, shadow mode metrics, and tier 2 against a real local upstream."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.auth import OWNER_ID
from app.lifespan import AppState, StartupError
from app.providers.demo import DEMO_HEADER
from tests.conftest import Backend, assert_envelope, running
from tests.fakes.tools import RecordingToolRunner
from tests.fakes.upstream import Reply, completion, fake_upstream

CHAT = "/v1/chat/completions"
APPROVER_TOKEN = "test-approver-token-0123456789"
BOB_TOKEN = "test-bob-token-0123456789abcd"
APPROVER = {"Authorization": f"Bearer {APPROVER_TOKEN}"}
BOB = {"Authorization": f"Bearer {BOB_TOKEN}"}


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


@asynccontextmanager
async def advanced(
    app_factory: Callable[..., FastAPI], **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState, RecordingToolRunner]]:
    settings = {"approver_token": APPROVER_TOKEN, "principals": f"bob={BOB_TOKEN}", **settings}
    app = app_factory(orchestrator_mode="advanced", **settings)
    async with running(app) as client:
        state: AppState = app.state.orch
        runner = RecordingToolRunner()
        assert state.routing.stage is not None
        state.routing.stage.tool_runner = runner  # a recording double: these tests are about routing
        yield client, state, runner


def content(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    text: str = response.json()["choices"][0]["message"]["content"]
    return text


async def test_calculate_2_plus_2_is_4_and_digits_alone_go_to_the_model(app_factory: Callable[..., FastAPI]) -> None:
    async with advanced(app_factory) as (client, _, runner):
        response = await client.post(CHAT, json=ask("calculate 2 + 2"))
        assert content(response) == "Tool [safe_calc] result: 4"
        body = response.json()
        assert body["route_decision"]["tool"] == "safe_calc" and body["route_decision"]["rule"] == "math.calculate"
        assert body["route_decision"]["params"] == {"expression": "2 + 2"}
        assert body["tool_result"] == {"status": "ok", "tool": "safe_calc", "result": 4.0}
        assert [(c.name, c.args) for c in runner.calls] == [("safe_calc", {"expression": "2 + 2"})]
        for text in ("I have 3 cats", "Call 555-123-4567", "It is 2024-05-01 today"):
            reply = await client.post(CHAT, json=ask(text))
            assert content(reply).startswith(DEMO_HEADER)
            assert reply.json()["route_decision"]["reason"] == "no_match"
            assert reply.json()["tool_result"] is None
        assert len(runner.calls) == 1


async def test_a_tool_answer_streams_with_the_decisions_on_the_first_chunk(app_factory: Callable[..., FastAPI]) -> None:
    async with advanced(app_factory) as (client, _, _runner):
        async with client.stream("POST", CHAT, json=ask("what is 6 * 7?", stream=True)) as response:
            text = (await response.aread()).decode()
        events = [block.removeprefix("data: ") for block in text.strip().split("\n\n")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[0]["route_decision"]["tool"] == "safe_calc" and chunks[0]["tool_result"]["result"] == 42.0
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Tool [safe_calc] result: 42"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_basic_mode_routes_nothing(app_factory: Callable[..., FastAPI]) -> None:
    app = app_factory()
    async with running(app) as client:
        assert app.state.orch.routing.stage is None
        response = await client.post(CHAT, json=ask("calculate 2 + 2"), headers={"X-Orch-Meta-Agent": "holly"})
        assert content(response).startswith(DEMO_HEADER)
        assert response.json()["route_decision"] is None and "agent" not in response.json()


async def test_an_agent_by_metadata_header_and_by_mention(app_factory: Callable[..., FastAPI]) -> None:
    async with advanced(app_factory) as (client, _, _runner):
        by_header = await client.post(CHAT, json=ask("hello"), headers={"X-Orch-Meta-Agent": "Holly"})
        assert by_header.json()["agent"] == "Holly" and by_header.json()["route_decision"]["agent"] == "Holly"
        by_body = await client.post(CHAT, json=ask("hello", metadata={"agent": "holly"}))
        assert by_body.json()["agent"] == "Holly"
        mention = await client.post(CHAT, json=ask("@holly what can you do?"))
        assert mention.json()["route_decision"]["rule"] == "agents.holly_mention"


async def test_intent_decision_with_debug_or_the_flag(app_factory: Callable[..., FastAPI]) -> None:
    async with advanced(app_factory) as (client, state, _runner):
        plain = await client.post(CHAT, json=ask("calculate 1 + 1"))
        assert "intent_decision" not in plain.json()
        debug = (await client.post(CHAT + "?debug=1", json=ask("calculate 1 + 1"))).json()["intent_decision"]
        assert debug["tier_used"] == 0 and debug["route"] == "tool:safe_calc"
        assert debug["policy_hash"] == state.policies.loaded_hash and debug["requires_hitl"] is False
    async with advanced(app_factory, intent_decision_expose=True) as (client, _, _runner):
        assert (await client.post(CHAT, json=ask("hello"))).json()["intent_decision"]["intent_id"] is None


async def test_a_message_longer_than_the_rules_window_is_never_cut_silently(
    app_factory: Callable[..., FastAPI],
) -> None:
    """Arguments taken from the first 8000 characters would miss the rest: the tool is offered to
    the model (which writes its own arguments from the whole message) instead of run on a part."""
    async with advanced(app_factory) as (client, _, runner):
        short = await client.post(CHAT, json=ask("summarize: The sky is blue. The sea is green."))
        assert short.json()["route_decision"]["reason"] == "summarize_command" and len(runner.calls) == 1
        long_text = "summarize: " + "This is one sentence of a long text. " * 300  # about 11,000 characters
        response = await client.post(CHAT, json=ask(long_text))
        assert content(response).startswith(DEMO_HEADER)  # the model answered
        route = response.json()["route_decision"]
        assert route["tool"] == "summarize_text" and route["reason"] == "message_longer_than_rules_window"
        assert route["action"] == "offered" and route["params"] == {}
        assert len(runner.calls) == 1  # nothing ran on a cut message


async def test_the_receipt_records_the_routing_decision_and_the_tool_run(app_factory: Callable[..., FastAPI]) -> None:
    async with advanced(app_factory, trust_panel_enabled=True) as (client, state, _runner):
        trace_id = (await client.post(CHAT, json=ask("calculate 3 * 3"))).json()["request_id"]
        await state.tracer.flush()
        steps = (await client.get(f"/v1/trust/trace/{trace_id}")).json()["steps"]
    assert [s["step_type"] for s in steps] == ["request", "tool_run", "route_decision"]
    decision = steps[2]["payload"]
    assert decision["route"] == "tool:safe_calc" and decision["outcome"] == "tool" and decision["tier"] == 0
    assert decision["confidence"] == 0.95 and decision["rule"] == "math.calculate"
    # arguments are pieces of the prompt: the receipt keeps their names and a hash, not the values
    assert "params" not in decision and "3 * 3" not in json.dumps(steps)
    assert decision["param_keys"] == ["expression"] and len(decision["params_sha256"]) == 64


async def queue_rows(backend: Backend, tmp_path: Path) -> list[dict[str, Any]]:
    """The review queue's rows, read straight from the database (not through the service)."""
    sql = "SELECT id, status FROM hitl_queue ORDER BY created_at"
    if backend.name == "postgres":
        return await backend.fetch(sql)
    with sqlite3.connect(tmp_path / "hitl_queue.db") as connection:  # the path build_settings gives
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute(sql)]


def weak_policy(tmp_path: Path) -> Path:
    path = tmp_path / "router_policy.yaml"
    path.write_text(
        "rules:\n"
        "  - id: weak-echo\n"
        "    when: {message: '^repeat (?P<message>.+)$'}\n"
        "    target: {tool: echo}\n"
        "    confidence: 0.6\n"
        "  - id: calc\n"
        "    when: {message: '^calculate (?P<expression>[0-9+ ]+)$'}\n"
        "    target: {tool: safe_calc}\n"
    )
    return path


async def test_the_review_queue_end_to_end(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    settings = {**backend.settings, "router_policy_path": weak_policy(tmp_path), "intent_router_enabled": True}
    async with advanced(app_factory, **settings) as (client, _, runner):
        held = await client.post(CHAT, json=ask("repeat hello"))
        answer = content(held)
        route = held.json()["route_decision"]
        assert route["reason"] == "hitl_low_confidence" and route["proposed"] == "tool:echo" and route["tool"] is None
        review_id = route["review_id"]
        assert review_id in answer and "Human review required" in answer and runner.calls == []

        # listing needs the approver; the requester may read its own item, others may not see it
        assert_envelope(await client.get("/v1/review"), 403, type_="permission_error")
        assert_envelope(await client.get("/v1/review", headers=BOB), 403)
        own = await client.get(f"/v1/review/{review_id}")
        assert own.status_code == 200 and own.json()["status"] == "pending"
        assert_envelope(await client.get(f"/v1/review/{review_id}", headers=BOB), 404)
        by_approver = await client.get(f"/v1/review/{review_id}", headers=APPROVER)
        assert by_approver.status_code == 200 and by_approver.json()["id"] == review_id
        listing = (await client.get("/v1/review?status=pending", headers=APPROVER)).json()
        assert listing["count"] == 1
        [item] = listing["items"]
        assert item["id"] == review_id and item["message"] == "repeat hello" and item["principal"] == OWNER_ID
        assert item["proposal"]["confidence"] == 0.6 and item["reason"] == "hitl_low_confidence"

        # bad resolutions change nothing
        resolve = f"/v1/review/{review_id}/resolve"
        assert_envelope(await client.post(resolve, json={"route": "tool:echo"}), 403)
        assert_envelope(await client.post(resolve, json={"route": "robot:x"}, headers=APPROVER), 400, param="route")
        assert_envelope(await client.post(resolve, json={"route": "agent:nobody"}, headers=APPROVER), 400)
        unknown_tool = await client.post(resolve, json={"route": "tool:does_not_exist"}, headers=APPROVER)
        assert assert_envelope(unknown_tool, 400, param="route")["code"] == "invalid_route"
        assert_envelope(await client.post(resolve, json={}, headers=APPROVER), 400, param="route")
        misspelt = await client.post(resolve, json={"route": "provider", "notes": "x"}, headers=APPROVER)
        assert_envelope(misspelt, 400, param="notes")
        control = await client.post(resolve, json={"route": "model:\u0000"}, headers=APPROVER)
        assert "control character" in assert_envelope(control, 400, param="route")["message"]
        too_long = await client.post(resolve, json={"route": "model:" + "m" * 257}, headers=APPROVER)
        assert assert_envelope(too_long, 400, param="route")["message"] == (
            "Invalid route: the route name is longer than 256 characters (or 'reject')."
        )
        assert_envelope(await client.post(resolve, content=b"[]", headers=APPROVER), 400)
        assert_envelope(await client.post("/v1/review/nope/resolve", json={"route": "provider"}, headers=APPROVER), 404)
        assert (await client.get(f"/v1/review/{review_id}")).json()["status"] == "pending"

        done = await client.post(resolve, json={"route": "tool:echo", "note": "it is an echo"}, headers=APPROVER)
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "resolved" and done.json()["resolution"] == "tool:echo"
        assert done.json()["resolved_by"] == "approver" and done.json()["cached"] is True
        again = await client.post(resolve, json={"route": "provider"}, headers=APPROVER)
        assert assert_envelope(again, 409)["code"] == "review_not_pending"

        # the same message is now routed as the approver decided, with arguments from this message
        routed = await client.post(CHAT, json=ask("repeat hello"))
        assert content(routed) == "Tool [echo] result: Echo: hello"
        assert routed.json()["route_decision"]["tier"] == 1
        assert (await client.get("/v1/review", headers=APPROVER)).json()["count"] == 0
        resolved = (await client.get("/v1/review?status=resolved", headers=APPROVER)).json()
        assert [i["id"] for i in resolved["items"]] == [review_id]
        assert_envelope(await client.get("/v1/review?status=weird", headers=APPROVER), 400, param="status")
        assert_envelope(await client.get("/v1/review?limit=0", headers=APPROVER), 400, param="limit")
        assert_envelope(await client.get("/v1/review?limit=501", headers=APPROVER), 400, param="limit")

        # a rejection closes the item and caches nothing
        second = (await client.post(CHAT, json=ask("repeat bye"))).json()["route_decision"]["review_id"]
        rejected = await client.post(f"/v1/review/{second}/resolve", json={"route": "reject"}, headers=APPROVER)
        assert rejected.json()["status"] == "rejected" and rejected.json()["cached"] is False
        assert (await client.post(CHAT, json=ask("repeat bye"))).json()["route_decision"]["reason"] == (
            "hitl_low_confidence"
        )
    rows = await queue_rows(backend, tmp_path)
    assert [r["status"] for r in rows] == ["resolved", "rejected", "pending"]
    assert rows[0]["id"] == review_id


async def test_without_the_queue_held_requests_go_to_the_model_and_the_api_says_it_is_off(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    settings = {"router_policy_path": weak_policy(tmp_path), "intent_hitl_enabled": False}
    async with advanced(app_factory, **settings) as (client, _, runner):
        response = await client.post(CHAT, json=ask("repeat hello"))
        assert content(response).startswith(DEMO_HEADER) and runner.calls == []
        assert response.json()["route_decision"]["reason"] == "hitl_low_confidence"
        assert response.json()["route_decision"]["action"] == "provider"
        error = assert_envelope(await client.get("/v1/review", headers=APPROVER), 503, type_="service_unavailable")
        assert error["code"] == "review_queue_disabled"
    assert not (tmp_path / "hitl_queue.db").exists()


async def test_shadow_mode_counts_agreements_and_mismatches_and_changes_nothing(
    app_factory: Callable[..., FastAPI],
) -> None:
    app = app_factory(intent_router_enabled=True, intent_router_shadow=True)
    async with running(app) as client:
        for text in ("hello", "how are you", "calculate 2 + 2"):
            response = await client.post(CHAT + "?debug=1", json=ask(text))
            assert content(response).startswith(DEMO_HEADER)  # the basic path answers
            assert response.json()["route_decision"] is None
        observed = response.json()["intent_decision"]
        assert observed["shadow"] is True and observed["agrees"] is False and observed["route"] == "tool:safe_calc"
        metrics = (await client.get("/metrics")).text
    assert "orch_router_shadow_total 3.0" in metrics
    assert "orch_router_shadow_agreement_total 2.0" in metrics
    assert "orch_router_shadow_mismatch_total 1.0" in metrics


async def test_flag_combinations_that_make_no_sense_stop_startup(settings_factory: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="ORCH_INTENT_ROUTER_SHADOW=1 observes the intent router"):
        settings_factory(intent_router_shadow=True)
    with pytest.raises(ValueError, match="ORCH_INTENT_ROUTER_ENABLED=1 routes only with ORCH_ORCHESTRATOR_MODE"):
        settings_factory(intent_router_enabled=True)
    with pytest.raises(ValueError, match="intent_min_confidence"):
        settings_factory(intent_min_confidence=1.5)


async def test_a_bad_router_policy_stops_startup(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    path = tmp_path / "router_policy.yaml"
    path.write_text("rules:\n  - id: r\n    when: {message: '(oops'}\n    target: {tool: t}\n")
    with pytest.raises(StartupError, match=r"rule 'r': when.message: invalid regex"):
        async with running(app_factory(router_policy_path=path)):
            pass


async def test_tier_2_asks_the_upstream_once_then_the_cache_answers(app_factory: Callable[..., FastAPI]) -> None:
    verdict = '{"route": "agent:holly", "confidence": 0.96, "runner_up": "provider", "runner_up_confidence": 0.1}'
    replies = [Reply(body=completion(verdict)), Reply(body=completion("Holly here.")), Reply(body=completion("Again."))]
    async with fake_upstream(*replies) as fake:
        settings = {
            "llm_enabled": True,
            "llm_provider": "openai",
            "openai_base_url": fake.url,
            "intent_router_enabled": True,
            "intent_classifier_enabled": True,
            "intent_classifier_model": "classifier-model",
        }
        async with advanced(app_factory, **settings) as (client, _, _runner):
            first = await client.post(CHAT + "?debug=1", json=ask("Could you help me plan my week?"))
            assert content(first) == "Holly here."
            assert first.json()["agent"] == "Holly" and first.json()["intent_decision"]["tier_used"] == 2
            second = await client.post(CHAT + "?debug=1", json=ask("could you help me  plan my week?"))
            assert content(second) == "Again."
            decision = second.json()["intent_decision"]
            assert decision["tier_used"] == 1 and decision["evidence"]["cache_hit"] is True
        classify, chat_one, chat_two = fake.requests
        assert classify["model"] == "classifier-model" and classify["temperature"] == 0 and classify["seed"] == 0
        assert "- agent:holly:" in classify["messages"][0]["content"]
        assert classify["messages"][1]["content"] == "Could you help me plan my week?"
        for request in (chat_one, chat_two):
            assert request["messages"][0]["content"].startswith("You are Holly")
            assert request["model"] == "qwen2.5:3b"


async def test_tier_2_nonsense_from_the_upstream_is_no_decision(app_factory: Callable[..., FastAPI]) -> None:
    replies = [Reply(body=completion("Definitely the calculator!")), Reply(body=completion("A normal answer."))]
    async with fake_upstream(*replies) as fake:
        settings = {
            "llm_enabled": True,
            "llm_provider": "openai",
            "openai_base_url": fake.url,
            "intent_router_enabled": True,
            "intent_classifier_enabled": True,
        }
        async with advanced(app_factory, **settings) as (client, _, runner):
            response = await client.post(CHAT + "?debug=1", json=ask("what should I cook tonight?"))
            assert content(response) == "A normal answer."
            evidence = response.json()["intent_decision"]["evidence"]
            assert evidence["classifier"]["error"] == "classifier_unparseable"
            assert runner.calls == [] and len(fake.requests) == 2
