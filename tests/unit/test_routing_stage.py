"""The routing stage on turns: what it runs (through the ToolRunner port, a recording double here),
what it changes (model, agent, offered tools), when it holds, and what it records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.agents.registry import load_agents
from app.auth import Principal
from app.db.connection import SqliteDatabase
from app.errors import ServiceUnavailable
from app.observability.metrics import Metrics
from app.orchestrator.turn import CallContext, Decisions, Turn
from app.providers.base import ProviderRequest
from app.receipts.tracer import Trace
from app.routing.intent import Guard, IntentRouter, signature
from app.routing.policy import load_router_policy, parse_policy
from app.routing.review import ReviewService
from app.routing.rules import RuleRouter
from app.routing.stage import RoutingStage, format_result
from app.routing.store import IntentCacheStore, ReviewStore
from app.schemas.chat import ChatCompletionRequest
from app.settings import SHIPPED_AGENT_DIR, SHIPPED_ROUTER_POLICY
from tests.fakes.tools import RecordingToolRunner

AGENTS = load_agents(SHIPPED_AGENT_DIR)
SHIPPED = load_router_policy(SHIPPED_ROUTER_POLICY, agents=AGENTS)
ALICE = Principal("alice", authenticated=True)


class RecordingTrace(Trace):
    """A trace that keeps its steps in memory (no tracer) for assertions."""

    __slots__ = ("recorded",)

    def __init__(self) -> None:
        super().__init__(None, "trace-1")
        self.recorded: list[tuple[str, dict[str, Any]]] = []

    def step(self, step_type: str, payload: dict[str, Any]) -> None:
        self.recorded.append((step_type, payload))


def turn(text: str, *, model: str | None = None, agent: str | None = None, **body: Any) -> Turn:
    messages = [{"role": "user", "content": text}]
    chat = ChatCompletionRequest.model_validate({"messages": messages, "model": model, **body})
    ctx = CallContext(principal=ALICE, request_id="r1", route="/v1/chat/completions", agent=agent)
    return Turn(
        chat=chat,
        ctx=ctx,
        trace=RecordingTrace(),
        request=ProviderRequest(model=model or "default-model", messages=messages),
        decisions=Decisions(request_id="trace-1"),
    )


def stage(
    *,
    runner: RecordingToolRunner | None = None,
    rules: list[dict[str, Any]] | None = None,
    review: ReviewService | None = None,
    cache: IntentCacheStore | None = None,
    intent_router: bool = False,
    expose: bool = False,
) -> RoutingStage:
    policy = parse_policy({"rules": rules}, agents=AGENTS) if rules is not None else SHIPPED
    router = IntentRouter(
        RuleRouter(policy, min_gap=0.05), Guard(min_confidence=0.85, min_gap=0.05), policy_hash="h", cache=cache
    )
    return RoutingStage(
        router,
        agents=AGENTS,
        metrics=Metrics(),
        advanced=True,
        intent_router=intent_router,
        shadow=False,
        expose=expose,
        review=review,
        tool_runner=runner,
    )


def steps(t: Turn, kind: str) -> list[dict[str, Any]]:
    assert isinstance(t.trace, RecordingTrace)
    return [payload for step_type, payload in t.trace.recorded if step_type == kind]


async def test_calculate_runs_safe_calc_with_the_extracted_expression() -> None:
    runner = RecordingToolRunner()
    t = turn("calculate 2 + 2")
    await stage(runner=runner).run(t)
    [call] = runner.calls
    assert (call.name, call.args, call.principal, call.trace_id) == (
        "safe_calc",
        {"expression": "2 + 2"},
        "alice",
        "trace-1",
    )
    assert call.approval_token is None
    assert t.answer == "Tool [safe_calc] result: 4"
    assert t.decisions.tool_result == {"status": "ok", "tool": "safe_calc", "result": 4.0}
    assert t.decisions.route_decision == {
        "tool": "safe_calc",
        "agent": None,
        "model": None,
        "params": {"expression": "2 + 2"},
        "confidence": 0.95,
        "reason": "math_expression",
        "rule": "math.calculate",
        "tier": 0,
        "action": "ran",
    }
    [receipt] = steps(t, "route_decision")
    assert receipt["route"] == "tool:safe_calc" and receipt["outcome"] == "tool" and receipt["rule"] == "math.calculate"


@pytest.mark.parametrize(
    "text",
    ["I have 3 cats", "My phone number is 555-123-4567", "The meeting is on 2024-05-01", "what is 555-1234"],
)
async def test_a_message_that_merely_contains_digits_is_not_sent_to_the_calculator(text: str) -> None:
    runner = RecordingToolRunner()
    t = turn(text)
    await stage(runner=runner).run(t)
    assert runner.calls == [] and t.answer is None
    assert t.decisions.route_decision is not None
    assert t.decisions.route_decision["tool"] is None and t.decisions.route_decision["reason"] == "no_match"


async def test_echo_and_tool_errors_are_answered_plainly() -> None:
    runner = RecordingToolRunner()
    t = turn("echo hello there")
    await stage(runner=runner).run(t)
    assert runner.calls[0].args == {"message": "hello there"} and t.answer == "Tool [echo] result: Echo: hello there"
    t = turn("summarize: One. Two.")
    await stage(runner=runner).run(t)
    assert runner.calls[-1].name == "summarize_text" and runner.calls[-1].args == {"text": "One. Two."}
    assert t.answer == "Tool error (summarize_text): unknown_tool:summarize_text"


def test_results_are_shown_readably() -> None:
    assert format_result("t", {"status": "ok", "result": 4.0}) == "Tool [t] result: 4"
    assert format_result("t", {"status": "ok", "result": 2.5}) == "Tool [t] result: 2.5"
    assert format_result("t", {"status": "ok", "result": {"a": 1}}) == 'Tool [t] result: {"a":1}'
    assert format_result("t", {"status": "error", "error": "approval_required"}) == "Tool error (t): approval_required"


async def test_without_a_tool_runner_a_tool_route_goes_to_the_model() -> None:
    t = turn("calculate 2 + 2")
    await stage(runner=None).run(t)
    assert t.answer is None
    assert t.decisions.route_decision is not None and t.decisions.route_decision["reason"] == "tools_unavailable"
    assert t.decisions.route_decision["action"] == "provider"


async def test_model_and_agent_targets_change_the_turn_and_never_reach_the_runner() -> None:
    runner = RecordingToolRunner()
    rules = [
        {"id": "big", "when": {"keywords": ["analyze"]}, "target": {"model": "big-model"}},
        {"id": "holly", "when": {"keywords": ["holly"]}, "target": {"agent": "holly"}},
        {"id": "by-model", "when": {"model": "fast"}, "target": {"model": "small-model"}},
    ]
    t = turn("please analyze this")
    await stage(runner=runner, rules=rules).run(t)
    assert t.request.model == "big-model"
    assert t.decisions.model_decision == {"model": "big-model", "reason": "big", "rule": "big"}
    t = turn("hi holly")
    await stage(runner=runner, rules=rules).run(t)
    assert t.decisions.extra["agent"] == "Holly" and t.request.messages[0]["role"] == "system"
    assert t.gateway_tools == ["safe_calc"]
    assert t.decisions.route_decision is not None and t.decisions.route_decision["agent"] == "Holly"
    assert [s["agent"] for s in steps(t, "agent")] == ["Holly"]
    t = turn("hello", model="fast")
    await stage(runner=runner, rules=rules).run(t)
    assert t.request.model == "small-model"
    assert runner.calls == []


async def test_an_addressed_agent_is_not_routed() -> None:
    runner = RecordingToolRunner()
    t = turn("calculate 2 + 2", agent="holly")
    await stage(runner=runner).run(t)
    assert runner.calls == [] and t.decisions.route_decision is None


async def test_metadata_from_the_body_and_headers_selects_an_agent() -> None:
    t = turn("hello", metadata={"agent": "holly"})
    await stage().run(t)
    assert t.decisions.extra.get("agent") == "Holly"
    t = turn("hello", metadata={"agent": "bob"})
    t.ctx.metadata = {"agent": "HOLLY"}  # headers win over the body
    await stage().run(t)
    assert t.decisions.extra.get("agent") == "Holly"


async def test_intent_decision_is_exposed_only_when_asked() -> None:
    t = turn("calculate 1 + 1")
    await stage(runner=RecordingToolRunner()).run(t)
    assert "intent_decision" not in t.decisions.extra
    t = turn("calculate 1 + 1")
    t.ctx.debug = True
    await stage(runner=RecordingToolRunner()).run(t)
    decision = t.decisions.extra["intent_decision"]
    assert decision["tier_used"] == 0 and decision["policy_hash"] == "h" and decision["route"] == "tool:safe_calc"
    t = turn("hello")
    await stage(expose=True).run(t)
    assert t.decisions.extra["intent_decision"]["intent_id"] is None


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[ReviewService, IntentCacheStore]]:
    db = await SqliteDatabase(tmp_path / "routing.db").open()
    cache = IntentCacheStore(db, ttl_seconds=600)
    await cache.migrate()
    store = ReviewStore(db)
    await store.migrate()
    yield (
        ReviewService(
            store, agents=AGENTS, tools=frozenset({"echo"}), cache=cache, model_allowlist=frozenset(), redact_pii=True
        ),
        cache,
    )
    await db.close()


WEAK = [{"id": "weak-echo", "when": {"message": r"^repeat (?P<message>.+)$"}, "target": {"tool": "echo"},
         "confidence": 0.6}]  # fmt: skip


async def test_a_low_confidence_tool_route_is_queued_and_the_answer_says_so(
    stores: tuple[ReviewService, IntentCacheStore],
) -> None:
    review, _ = stores
    runner = RecordingToolRunner()
    t = turn("repeat my card 4111 1111 1111 1111 and mail me at a@b.co")
    await stage(runner=runner, rules=WEAK, review=review).run(t)
    assert runner.calls == []
    route = t.decisions.route_decision
    assert route is not None and route["reason"] == "hitl_low_confidence" and route["tool"] is None
    assert route["proposed"] == "tool:echo" and route["action"] == "review"
    assert t.answer is not None and "Human review required" in t.answer and route["review_id"] in t.answer
    [item] = await review.list(status="pending", limit=10)
    assert item.id == route["review_id"] and item.principal == "alice" and item.trace_id == "trace-1"
    assert item.proposed_route == "tool:echo" and item.reason == "hitl_low_confidence"
    assert "a@b.co" not in item.message and "[REDACTED]" in item.message
    assert steps(t, "route_decision")[0]["outcome"] == "review"


async def test_without_the_queue_a_held_route_goes_to_the_model() -> None:
    runner = RecordingToolRunner()
    t = turn("repeat this")
    await stage(runner=runner, rules=WEAK, review=None).run(t)
    assert runner.calls == [] and t.answer is None
    route = t.decisions.route_decision
    assert route is not None and route["reason"] == "hitl_low_confidence" and route["action"] == "provider"


async def test_a_human_resolution_routes_the_same_message_next_time(
    stores: tuple[ReviewService, IntentCacheStore],
) -> None:
    review, cache = stores
    runner = RecordingToolRunner()
    routing = stage(runner=runner, rules=WEAK, review=review, cache=cache, intent_router=True)
    first = turn("repeat hello")
    await routing.run(first)
    assert first.decisions.route_decision is not None
    review_id = first.decisions.route_decision["review_id"]
    resolved = await review.resolve(review_id, route="tool:echo", note="fine", approver=ALICE)
    assert resolved["status"] == "resolved" and resolved["cached"] is True
    second = turn("Repeat  HELLO")  # the same signature
    await routing.run(second)
    assert second.answer == "Tool [echo] result: Echo: HELLO"
    assert runner.calls[0].args == {"message": "HELLO"}  # arguments from this message, by the rule
    assert second.decisions.route_decision is not None and second.decisions.route_decision["tier"] == 1
    [intent] = steps(second, "intent_router")
    assert intent["evidence"]["source"] == "human_review" and intent["evidence"]["review_id"] == review_id
    assert "tool_params" not in intent and intent["param_keys"] == ["message"]  # no prompt text in receipts


async def test_a_cached_tool_route_without_arguments_offers_the_tool(
    stores: tuple[ReviewService, IntentCacheStore],
) -> None:
    _, cache = stores
    runner = RecordingToolRunner()
    routing = stage(runner=runner, cache=cache, intent_router=True)
    text = "how much is two plus two"
    await cache.put("h", signature(text), {"route": "tool:safe_calc", "confidence": 0.97, "source": "classifier"})
    t = turn(text)
    await routing.run(t)
    assert runner.calls == [] and t.answer is None
    assert t.gateway_tools == ["safe_calc"]
    assert t.decisions.route_decision is not None and t.decisions.route_decision["action"] == "offered"


async def test_a_broken_review_queue_fails_the_held_request_with_503_and_runs_nothing(tmp_path: Path) -> None:
    db = await SqliteDatabase(tmp_path / "broken.db").open()
    store = ReviewStore(db)
    await store.migrate()
    await db.close()  # the database goes away
    review = ReviewService(
        store, agents=AGENTS, tools=frozenset({"echo"}), cache=None, model_allowlist=frozenset(), redact_pii=True
    )
    runner = RecordingToolRunner()
    with pytest.raises(ServiceUnavailable) as caught:
        await stage(runner=runner, rules=WEAK, review=review).run(turn("repeat hello"))
    assert caught.value.code == "review_queue_unavailable" and runner.calls == []


async def test_a_broken_cache_is_skipped(tmp_path: Path) -> None:
    db = await SqliteDatabase(tmp_path / "broken.db").open()
    cache = IntentCacheStore(db, ttl_seconds=60)
    await cache.migrate()
    await db.close()
    t = turn("hello there")
    await stage(cache=cache, intent_router=True).run(t)
    assert t.decisions.route_decision is not None and t.decisions.route_decision["reason"] == "no_match"


async def test_advanced_shadow_acts_on_the_rules_and_only_observes_the_intent_router(
    stores: tuple[ReviewService, IntentCacheStore],
) -> None:
    review, cache = stores
    policy = SHIPPED
    router = IntentRouter(
        RuleRouter(policy, min_gap=0.05), Guard(min_confidence=0.85, min_gap=0.05), policy_hash="h", cache=cache
    )
    metrics = Metrics()
    runner = RecordingToolRunner()
    shadow = RoutingStage(
        router,
        agents=AGENTS,
        metrics=metrics,
        advanced=True,
        intent_router=True,
        shadow=True,
        expose=False,
        review=review,
        tool_runner=runner,
    )
    await cache.put("h", signature("add two and two"), {"route": "agent:holly", "confidence": 1.0, "source": "x"})
    agree = turn("calculate 2 + 2")
    await shadow.run(agree)
    assert agree.answer == "Tool [safe_calc] result: 4"  # the rules act
    mismatch = turn("add two and two")
    await shadow.run(mismatch)
    assert "agent" not in mismatch.decisions.extra and mismatch.answer is None  # the cached route is not acted on
    [observed] = steps(mismatch, "intent_router")
    assert observed["shadow"] is True and observed["agrees"] is False and observed["route"] == "agent:holly"
    text = metrics.render().decode()
    assert "orch_router_shadow_total 2.0" in text and "orch_router_shadow_mismatch_total 1.0" in text
    assert 'orch_routing_decisions_total{outcome="tool",tier="0"} 1.0' in text
