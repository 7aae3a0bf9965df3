"""The human-review queue: requests the router would not decide alone, and their resolution.

A held request is stored with its proposal and the message (secrets and, with
``ORCH_MEMORY_SCRUB_REDACT_PII``, personal data redacted). An approver lists the queue and
resolves an item with the route it should have taken; the resolution goes into the decision cache
(tier 1), so the same message under the same policy is routed that way from then on (for
``ORCH_INTENT_CACHE_TTL_SEC``, when the intent router and its cache are on).
"""

from __future__ import annotations

from typing import Any

from app.agents.registry import AgentRegistry
from app.auth import ROLE_APPROVER, Principal
from app.errors import InvalidRequest, NotFound, OrchestratorError
from app.ids import new_uuid
from app.routing.intent import Decision
from app.routing.policy import Target
from app.routing.store import REVIEW_STATUSES, IntentCacheStore, ReviewItem, ReviewStore
from app.scrub import scrub_text
from app.timefmt import iso_now

MAX_STORED_MESSAGE_CHARS = 2000  # enough for a reviewer to judge the intent, not a transcript
REJECT = "reject"


class ReviewConflict(OrchestratorError):
    """The item was already resolved."""

    status = 409
    type = "invalid_request_error"
    default_code = "review_not_pending"


class ReviewService:
    def __init__(
        self,
        store: ReviewStore,
        *,
        agents: AgentRegistry,
        tools: frozenset[str],
        cache: IntentCacheStore | None,
        model_allowlist: frozenset[str],
        redact_pii: bool,
    ) -> None:
        self.store = store
        self.agents = agents
        self.tools = tools  # the registered tools (none when tools are off)
        self.cache = cache
        self.model_allowlist = model_allowlist
        self.redact_pii = redact_pii

    async def enqueue(
        self,
        decision: Decision,
        *,
        text: str,
        signature: str,
        principal: Principal,
        trace_id: str,
        policy_hash: str,
    ) -> ReviewItem:
        message = scrub_text(text, pii=self.redact_pii, max_chars=MAX_STORED_MESSAGE_CHARS)
        item = ReviewItem(
            id=new_uuid(),
            created_at=iso_now(),
            status="pending",
            reason=decision.review_reason or "hitl_required",
            principal=principal.id,
            trace_id=trace_id,
            policy_hash=policy_hash,
            signature=signature,
            proposed_route=decision.target.label,
            proposal={
                "route": decision.target.label,
                "tier": decision.tier,
                "rule": decision.rule,
                "confidence": decision.confidence,
                "gap": decision.gap,
                "runner_up": decision.runner_up,
                "decision_id": decision.decision_id,
            },
            message=message,
        )
        await self.store.enqueue(item)
        return item

    async def list(self, *, status: str | None, limit: int) -> list[ReviewItem]:
        if status is not None and status not in REVIEW_STATUSES:
            raise InvalidRequest(
                f"status must be one of {', '.join(REVIEW_STATUSES)} or all.", param="status", code="invalid_value"
            )
        return await self.store.list(status=status, limit=limit)

    async def get(self, item_id: str, principal: Principal) -> ReviewItem:
        item = await self.store.get(item_id)
        # A caller may see its own item; an approver sees every item. Others get the same 404 as
        # for a missing id, so ids of other callers' requests cannot be probed.
        if item is None or not (principal.has_role(ROLE_APPROVER) or item.principal == principal.id):
            raise NotFound(f"There is no review item '{item_id[:64]}'.", code="review_not_found")
        return item

    def check_route(self, route: str) -> Target | None:
        """The route an approver chose: ``reject``, ``provider`` or ``tool:|model:|agent:<name>``."""
        if route == REJECT:
            return None
        try:
            target = Target.parse(route)
        except ValueError as exc:
            raise InvalidRequest(f"Invalid route: {exc} (or 'reject').", param="route", code="invalid_route") from None
        if target.kind == "agent" and (target.name or "") not in self.agents:
            raise InvalidRequest(f"There is no agent named '{target.name}'.", param="route", code="invalid_route")
        if target.kind == "tool" and target.name not in self.tools:
            raise InvalidRequest(f"There is no tool named '{target.name}'.", param="route", code="invalid_route")
        if target.kind == "model" and self.model_allowlist and target.name not in self.model_allowlist:
            raise InvalidRequest(
                f"The model '{target.name}' is not allowed here (ORCH_LLM_MODEL_ALLOWLIST).",
                param="route",
                code="invalid_route",
            )
        return target

    async def resolve(self, item_id: str, *, route: str, note: str | None, approver: Principal) -> dict[str, Any]:
        target = self.check_route(route)
        item = await self.store.get(item_id)
        if item is None:
            raise NotFound(f"There is no review item '{item_id[:64]}'.", code="review_not_found")
        status = "rejected" if target is None else "resolved"
        label = REJECT if target is None else target.label
        if not await self.store.resolve(item_id, status=status, resolution=label, resolved_by=approver.id, note=note):
            current = await self.store.get(item_id)
            raise ReviewConflict(
                f"The review item '{item_id}' is already {current.status if current else 'closed'}.",
                param="id",
            )
        cached = False
        if target is not None and self.cache is not None:
            await self.cache.put(
                item.policy_hash,
                item.signature,
                {"route": target.label, "confidence": 1.0, "source": "human_review", "review_id": item.id},
            )
            cached = True
        resolved = await self.store.get(item_id)
        assert resolved is not None
        return {**resolved.as_dict(), "cached": cached}
