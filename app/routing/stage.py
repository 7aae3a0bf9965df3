"""The routing stage: decide a turn's route (tiers, guard) and act on it.

- a tool decided by a rule runs through the :class:`~app.tools.types.ToolRunner` (tool policy,
  approvals, sandbox) and its result is the answer;
- a tool proposed by the cache, the semantic tier or the classifier is offered to the model (it
  has no arguments);
- a model sets the turn's model; an agent applies the agent; the provider changes nothing;
- a decision the guard holds goes to the human-review queue and the answer says so.

In shadow mode the intent router runs beside the path in use (the rules in advanced mode, no
routing in basic mode) without acting; agreements and mismatches are counted in the metrics.
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

import orjson

from app.agents.registry import AgentRegistry
from app.agents.stage import apply_agent
from app.errors import ServiceUnavailable
from app.observability.logging import get_logger
from app.observability.metrics import Metrics
from app.orchestrator.turn import Turn
from app.receipts.steps import IntentRouterStep, RouteDecisionStep, SemanticRouterStep
from app.routing.intent import SEMANTIC, Decision, IntentRouter, signature
from app.routing.policy import RoutedRequest
from app.routing.review import ReviewService
from app.routing.rules import MAX_ROUTED_CHARS
from app.tools.types import ToolRunner, approval_message

log = get_logger("routing")

TOOLS_UNAVAILABLE = "tools_unavailable"
MESSAGE_TOO_LONG = "message_longer_than_rules_window"
_MAX_METADATA_VALUE = 256


def request_metadata(turn: Turn) -> dict[str, str]:
    """Request metadata for rule conditions: the OpenAI ``metadata`` object of the body, then the
    ``X-Orch-Meta-*`` headers (which win). Keys are lower-cased; only string values count."""
    found: dict[str, str] = {}
    body = (turn.chat.model_extra or {}).get("metadata")
    if isinstance(body, dict):
        for key, value in body.items():
            if isinstance(key, str) and isinstance(value, str):
                found[key.lower()] = value[:_MAX_METADATA_VALUE]
    if turn.ctx.metadata:
        found.update(turn.ctx.metadata)
    return found


def params_receipt(params: dict[str, Any]) -> dict[str, Any]:
    """Tool arguments as a receipt records them: their names and a hash, not their values (which
    are pieces of the prompt; receipts record decisions, never prompts)."""
    if not params:
        return _NO_PARAMS
    digest = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()
    return {"param_keys": sorted(params), "params_sha256": digest}


_NO_PARAMS: dict[str, Any] = {"param_keys": [], "params_sha256": hashlib.sha256(b"{}").hexdigest()}


def format_result(name: str, result: dict[str, Any]) -> str:
    if result.get("status") == "ok":
        value = result.get("result")
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            value = int(value)
        shown = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
        return f"Tool [{name}] result: {shown}"
    return f"Tool error ({name}): {result.get('error', 'unknown_error')}"


def hold_message(decision: Decision, *, review_id: str | None, min_confidence: float) -> str:
    if decision.review_reason == "hitl_ambiguous":
        why = (
            f"two routes are too close to choose between ({decision.target.label} at {decision.confidence:.2f}, "
            f"{decision.runner_up} nearly as likely)"
        )
    elif decision.review_reason == "hitl_required":
        why = f"the policy asks a human before routing to {decision.target.label}"
    else:
        why = (
            f"the router is not confident enough ({decision.target.label} at {decision.confidence:.2f}, "
            f"below {min_confidence:.2f})"
        )
    return (
        f"Human review required: {why}. Your request is queued for review as {review_id}; "
        "nothing was run. Ask again once an approver has resolved it."
    )


class RoutingStage:
    """Runs in ``ORCH_ORCHESTRATOR_MODE=advanced``, or beside the basic path in shadow mode."""

    name = "routing"

    def __init__(
        self,
        router: IntentRouter,
        *,
        agents: AgentRegistry,
        metrics: Metrics,
        advanced: bool,
        intent_router: bool,
        shadow: bool,
        expose: bool,
        review: ReviewService | None,
        tool_runner: ToolRunner | None,
    ) -> None:
        self.router = router
        self.agents = agents
        self.advanced = advanced
        self.intent_router = intent_router and not shadow  # the full tiers decide
        self.shadow = shadow
        self.expose = expose
        self.review = review
        self.tool_runner = tool_runner
        self.decisions = metrics.counter(
            "orch_routing_decisions_total",
            "Routing decisions acted on, by tier (0 rules, 1 cache, semantic, 2 classifier, none) and outcome.",
            ("tier", "outcome"),
        )
        self._decision_counters: dict[tuple[int | str | None, str], Any] = {}
        self.shadow_total = metrics.counter("orch_router_shadow_total", "Shadow comparisons of the intent router.")
        self.shadow_agree = metrics.counter(
            "orch_router_shadow_agreement_total", "Shadow comparisons where the intent router agreed."
        )
        self.shadow_mismatch = metrics.counter(
            "orch_router_shadow_mismatch_total", "Shadow comparisons where the intent router decided differently."
        )

    async def run(self, turn: Turn) -> None:
        if turn.ctx.agent is not None:
            return  # the caller addressed an agent: its prompt, tools and model apply, nothing is routed
        text = turn.chat.last_user_text()
        request = RoutedRequest(
            text=text[:MAX_ROUTED_CHARS],
            model=turn.chat.model,
            metadata=request_metadata(turn),
            cut=len(text) > MAX_ROUTED_CHARS,
        )
        if self.shadow:
            decision = await self._shadow(turn, request)
            if decision is None:
                return
        elif self.intent_router:
            decision = await self.router.decide(request)
            self._record_intent(turn, decision)
        else:
            decision = await self.router.decide_local(request)
            if self.expose or turn.ctx.debug:
                turn.decisions.extra["intent_decision"] = decision.as_dict(self.router.policy_hash)
        self._record_semantic(turn, decision)
        await self._act(turn, decision, request)

    @staticmethod
    def _record_semantic(turn: Turn, decision: Decision, **extra: Any) -> None:
        scores = decision.evidence.get(SEMANTIC)
        if scores is not None:  # the candidates and their scores, best first (tool names, never the message)
            turn.trace.step(
                "semantic_router", cast(SemanticRouterStep, {**scores, "decided": decision.tier == SEMANTIC, **extra})
            )

    def _record_intent(self, turn: Turn, decision: Decision, **extra: Any) -> None:
        details = decision.as_dict(self.router.policy_hash)
        details.update(extra)
        receipt = {key: value for key, value in details.items() if key != "tool_params"}
        turn.trace.step("intent_router", cast(IntentRouterStep, {**receipt, **params_receipt(decision.params)}))
        if self.expose or turn.ctx.debug:
            turn.decisions.extra["intent_decision"] = details

    async def _shadow(self, turn: Turn, request: RoutedRequest) -> Decision | None:
        """The path in use decides; the intent router is run and compared, never acted on."""
        in_use = await self.router.decide_local(request) if self.advanced else None
        observed = await self.router.decide(request)
        if in_use is None or SEMANTIC not in in_use.evidence:
            self._record_semantic(turn, observed, shadow=True)
        agree = observed.label == (in_use.label if in_use is not None else "provider")
        self.shadow_total.inc()
        (self.shadow_agree if agree else self.shadow_mismatch).inc()
        self._record_intent(turn, observed, shadow=True, agrees=agree)
        return in_use

    def _route_decision(self, decision: Decision, **extra: Any) -> dict[str, Any]:
        target = decision.target
        fields: dict[str, Any] = {
            "tool": target.name if target.kind == "tool" else None,
            "agent": None,
            "model": target.name if target.kind == "model" else None,
            "params": decision.params,
            "confidence": decision.confidence,
            "reason": decision.reason,
            "rule": decision.rule,
            "tier": decision.tier,
        }
        if target.kind == "agent":
            agent = self.agents.get(target.name or "")
            fields["agent"] = agent.name if agent else target.name
        fields.update(extra)
        return fields

    def _done(self, turn: Turn, decision: Decision, outcome: str, route: dict[str, Any]) -> None:
        turn.decisions.route_decision = route
        key = (decision.tier, outcome)
        counter = self._decision_counters.get(key)
        if counter is None:  # prometheus' labels() costs microseconds: resolve each pair once
            tier = "none" if decision.tier is None else str(decision.tier)
            counter = self._decision_counters[key] = self.decisions.labels(tier, outcome)
        counter.inc()
        step = {key: value for key, value in route.items() if key != "params"}
        step.update(params_receipt(decision.params))
        step.update(route=decision.label, gap=decision.gap, outcome=outcome, decision_id=decision.decision_id)
        turn.trace.step("route_decision", cast(RouteDecisionStep, step))

    async def _act(self, turn: Turn, decision: Decision, request: RoutedRequest) -> None:
        target = decision.target
        if decision.review_reason is not None:
            await self._hold(turn, decision, request)
            return
        if target.kind == "tool":
            await self._tool(turn, decision, cut=request.cut)
        elif target.kind == "model":
            turn.request.model = target.name or turn.request.model
            turn.decisions.model_decision = {"model": target.name, "reason": decision.reason, "rule": decision.rule}
            self._done(turn, decision, "model", self._route_decision(decision))
        elif target.kind == "agent":
            agent = self.agents.get(target.name or "")
            if agent is None:  # only a stale cache entry could name a removed agent (policy hash guards this)
                self._done(turn, decision, "provider", self._route_decision(decision, reason="agent_missing"))
                return
            apply_agent(turn, agent, reason="routed")
            self._done(turn, decision, "agent", self._route_decision(decision))
        else:
            self._done(turn, decision, "provider", self._route_decision(decision))

    async def _tool(self, turn: Turn, decision: Decision, *, cut: bool) -> None:
        name = decision.target.name or ""
        if self.tool_runner is None:
            # Tools are not wired in: answer with the model rather than fail the request.
            route = self._route_decision(decision, reason=TOOLS_UNAVAILABLE, action="provider")
            self._done(turn, decision, "provider", route)
            return
        if not decision.extracted or cut:
            # A cached or classified tool route has no arguments, and arguments taken from the
            # beginning of a message too long for the rules would silently miss the rest: offer
            # the tool to the model, which calls it (through the same runner) with arguments it
            # writes itself from the whole message.
            if name not in turn.gateway_tools:
                turn.gateway_tools = [*turn.gateway_tools, name]
            route = self._route_decision(decision, action="offered")
            if cut and decision.extracted:
                route.update(reason=MESSAGE_TOO_LONG, params={})  # those arguments are not used
            self._done(turn, decision, "tool_offered", route)
            return
        result = await self.tool_runner.run(name, dict(decision.params), principal=turn.ctx.principal, trace=turn.trace)
        turn.decisions.tool_result = result
        if result.get("error") == "approval_required":
            # Nothing ran: the answer names the approval request a person has to decide.
            turn.answer, action = approval_message(result), "approval_required"
        else:
            turn.answer, action = format_result(name, result), "ran" if result.get("status") == "ok" else "failed"
        self._done(turn, decision, "tool", self._route_decision(decision, action=action))

    async def _hold(self, turn: Turn, decision: Decision, request: RoutedRequest) -> None:
        if self.review is None:
            # The review queue is off: nothing is acted on, the model answers as usual.
            route = self._route_decision(decision, review_id=None, action="provider", proposed=decision.target.label)
            route["tool"] = route["agent"] = route["model"] = None
            route["reason"] = decision.review_reason
            self._done(turn, decision, "provider", route)
            return
        try:
            item = await self.review.enqueue(
                decision,
                text=request.text,
                signature=signature(request.text),
                principal=turn.ctx.principal,
                trace_id=turn.trace.id,
                policy_hash=self.router.policy_hash,
            )
        except Exception as exc:
            # Held and not queued: nothing may run, and the caller must not think it is queued.
            log.error("review queue write failed", extra={"error_type": type(exc).__name__})
            raise ServiceUnavailable(
                "This request needs a human review, but the review queue is unavailable; try again later.",
                code="review_queue_unavailable",
            ) from None
        route = self._route_decision(decision, review_id=item.id, action="review", proposed=decision.target.label)
        route["tool"] = route["agent"] = route["model"] = None
        route["reason"] = decision.review_reason
        turn.answer = hold_message(decision, review_id=item.id, min_confidence=self.router.guard.min_confidence)
        self._done(turn, decision, "review", route)
