"""The memory service: the gate and the store together, the chat stage, recall and the TTL purge.

Receipts record every decision (``memory_decision``), every recall (``memory_recall``, the ids
used) and every deletion (``memory_delete``, counts and id hashes), never a memory's content.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any

from app.errors import InternalError, InvalidRequest, NotFound, OrchestratorError, PermissionDenied, ServiceUnavailable
from app.memory.gate import (
    ALLOW_DEDUPE_UPDATE,
    DENY_ERROR,
    DENY_FEATURE_DISABLED,
    DENY_POLICY_WRITE_DISABLED,
    DENY_SCRUBBED_TOO_SHORT,
    DENY_SENSITIVE_CONTENT,
    REASONS,
    GateConfig,
    Verdict,
    candidate_id_hash,
    content_hash,
    decide,
)
from app.memory.store import MemoryStore, StoredMemory, owner_hash
from app.observability.logging import get_logger
from app.observability.metrics import Metrics
from app.orchestrator.turn import Turn
from app.receipts.steps import MemoryDecisionStep
from app.receipts.tracer import Trace, Tracer
from app.schemas.memory import MemoryDeleted, MemoryDeletedAll, MemoryPage
from app.scrub import redact_text
from app.settings import Settings
from app.tasks import cancel_and_wait

log = get_logger("memory")

ROUTE = "/v1/memory"  # the route the resource's receipts are recorded under, whichever face called


def _not_found(memory_id: str) -> NotFound:
    return NotFound(f"No memory '{memory_id}'.", param="memory_id", code="memory_not_found")


RECALL_HEADER = "Memories the user asked you to keep (most relevant first; use them if they help answer the request):"
# The decision every chat gets while the gate is off: built once, shared (never mutated).
DISABLED_DECISION: dict[str, Any] = {"decision": "deny", "reason": DENY_FEATURE_DISABLED, "candidate_id": None}


@dataclass(slots=True)
class Outcome:
    """A finished decision: the verdict, and the stored entry's id when it was allowed."""

    reason: str
    verdict: Verdict
    candidate_id: str | None = None

    @property
    def allowed(self) -> bool:
        return self.candidate_id is not None

    def response(self) -> dict[str, Any]:
        """The ``memory_decision`` field of a chat response: the true reason, always."""
        decision: dict[str, Any] = {
            "decision": "allow" if self.allowed else "deny",
            "reason": self.reason,
            "candidate_id": self.candidate_id,
        }
        if self.candidate_id is not None:
            decision["candidate_id_hash"] = candidate_id_hash(self.candidate_id)
        return decision


def gate_config(settings: Settings) -> GateConfig:
    return GateConfig(
        enabled=settings.memory_enabled,
        capture_enabled=settings.memory_capture,
        write_policy=settings.memory_policy,
        max_chars=settings.memory_max_chars,
        min_chars=settings.memory_min_chars,
        redact_pii=settings.memory_scrub_redact_pii,
    )


class MemoryService:
    """Capture through the gate, recall, and the caller's right to see and erase.

    The operations of the memory resource (``require_enabled``, ``list_page``, ``read``,
    ``remember``, ``forget``, ``forget_all``) are what every face calls: they raise
    :class:`~app.errors.OrchestratorError` subclasses and record their own receipts.
    """

    def __init__(
        self, store: MemoryStore | None, settings: Settings, metrics: Metrics | None = None, *, tracer: Tracer
    ) -> None:
        self.store = store
        self.tracer = tracer
        self.enabled = settings.memory_enabled and store is not None
        # Labels are the taxonomy (nine values); children are bound once, off the request path.
        self._decided: dict[str, Any] = {}
        self._purged: Any = None
        if metrics is not None:
            decisions = metrics.counter("orch_memory_decisions_total", "Memory gate decisions by reason.", ("reason",))
            self._decided = {reason: decisions.labels(reason) for reason in REASONS}
            self._purged = metrics.counter("orch_memory_purged_total", "Expired memories deleted by the purge task.")
        self.config = gate_config(settings)
        self.ttl_minutes = settings.memory_capture_ttl_minutes
        self.recall_enabled = settings.memory_recall_enabled and store is not None
        self.recall_max_items = settings.memory_recall_max_items
        self.recall_max_chars = settings.memory_recall_max_chars
        self.purge_interval = settings.memory_purge_interval_sec
        self._purger: asyncio.Task[None] | None = None

    def request_fields(self) -> dict[str, str]:
        """With memory off every chat's decision is ``deny:feature_disabled``: the receipt records
        it on the request step (``memory_decision``) rather than in a step of its own."""
        return {} if self.config.enabled else {"memory_decision": DENY_FEATURE_DISABLED}

    # --- capture ---------------------------------------------------------------------------
    async def store_verdict(
        self, verdict: Verdict, *, principal: str, conversation_id: str | None, source: str
    ) -> Outcome:
        """Store an allowed verdict (or refresh its duplicate); a storage failure is ``deny:error``."""
        if verdict.content is None or self.store is None:
            return Outcome(verdict.reason if verdict.content is None else DENY_ERROR, verdict)
        try:
            result = await self.store.capture(
                owner=owner_hash(principal),
                conversation_id=conversation_id,
                content=verdict.content,
                digest=content_hash(verdict.content),
                ttl_minutes=self.ttl_minutes,
                source=source,
            )
        except Exception as exc:
            # The type only: a driver's message may quote the statement's values.
            log.error("memory capture failed", extra={"error_type": type(exc).__name__})
            return Outcome(DENY_ERROR, verdict)
        return Outcome(ALLOW_DEDUPE_UPDATE if result.deduped else verdict.reason, verdict, result.id)

    def record(
        self, trace: Trace, outcome: Outcome, *, conversation: bool, source: str, detail: str | None = None
    ) -> None:
        """The ``memory_decision`` receipt step: the same reason as the response, no content."""
        verdict = outcome.verdict
        payload: MemoryDecisionStep = {
            "decision": "allow" if outcome.allowed else "deny",
            "reason": outcome.reason,
            "explicit_intent": verdict.explicit_intent,
            "write_policy": self.config.write_policy,
            "scrub_applied": verdict.scrub_applied,
            "redactions": verdict.redactions,
            "ttl_minutes": self.ttl_minutes,
            "scope": "conversation" if conversation else "global",
            "source": source,
        }
        if detail is not None:
            payload["detail"] = detail
        if outcome.candidate_id is not None:
            payload["candidate_id_hash"] = candidate_id_hash(outcome.candidate_id)
        trace.step("memory_decision", payload)
        counter = self._decided.get(outcome.reason)
        if counter is not None:
            counter.inc()

    async def capture(
        self, text: str, *, principal: str, conversation_id: str | None, source: str, trace: Trace, explicit: bool
    ) -> Outcome:
        verdict = decide(text, self.config, explicit=explicit)
        outcome = await self.store_verdict(verdict, principal=principal, conversation_id=conversation_id, source=source)
        self.record(trace, outcome, conversation=conversation_id is not None, source=source)
        return outcome

    def _scrubbed(self, memory: StoredMemory) -> StoredMemory:
        """A memory as it leaves the store, scrubbed again: the gate scrubbed it before it was
        stored, but rows stored by an older gate (with fewer patterns) must not be shown or recalled
        with what today's scrubber would have caught. Costs a scan of at most memory_max_chars."""
        content, count = redact_text(memory.content, pii=self.config.redact_pii)
        return memory if count == 0 else dataclasses.replace(memory, content=content)

    # --- recall ----------------------------------------------------------------------------
    async def recall(self, principal: str, conversation_id: str | None, query: str) -> list[StoredMemory]:
        if self.store is None:
            return []
        found = await self.store.recall(
            owner_hash(principal), conversation_id=conversation_id, query=query, limit=self.recall_max_items
        )
        return [self._scrubbed(memory) for memory in found]

    def recall_message(self, memories: list[StoredMemory]) -> tuple[dict[str, Any] | None, list[str]]:
        """One system message with as many memories as fit in ``recall_max_chars``; and their ids."""
        lines: list[str] = [RECALL_HEADER]
        used: list[str] = []
        size = len(RECALL_HEADER)
        for memory in memories:
            line = "- " + memory.content
            if size + 1 + len(line) > self.recall_max_chars:
                room = self.recall_max_chars - size - 1
                if used or room < 40:  # a cut memory only when it is the first and enough of it fits
                    break
                line = line[: room - 3] + "..."
            lines.append(line)
            used.append(memory.id)
            size += 1 + len(line)
        if not used:
            return None, []
        return {"role": "system", "content": "\n".join(lines)}, used

    # --- the caller's own entries ----------------------------------------------------------
    def _store(self) -> MemoryStore:
        if self.store is None:  # the routes check the switch first; this is a safety net
            raise RuntimeError("memory is disabled")
        return self.store

    async def page(self, principal: str, *, limit: int, after: str | None) -> tuple[list[StoredMemory], bool]:
        entries, more = await self._store().page(owner_hash(principal), limit=limit, after=after)
        return [self._scrubbed(memory) for memory in entries], more

    async def get(self, principal: str, memory_id: str) -> StoredMemory | None:
        memory = await self._store().get(owner_hash(principal), memory_id)
        return None if memory is None else self._scrubbed(memory)

    async def delete(self, principal: str, memory_id: str, trace: Trace) -> bool:
        deleted = await self._store().delete(owner_hash(principal), memory_id)
        if deleted:
            trace.step("memory_delete", {"count": 1, "candidate_id_hash": candidate_id_hash(memory_id)})
        return deleted

    async def delete_all(self, principal: str, trace: Trace) -> int:
        count = await self._store().delete_all(owner_hash(principal))
        trace.step("memory_delete", {"count": count, "all": True})
        return count

    # --- the memory resource, as every face calls it ---------------------------------------
    def require_enabled(self) -> None:
        """503 naming the flag while memory is off (callers check it after auth, so that
        strangers cannot tell)."""
        if not self.enabled:
            raise ServiceUnavailable("Memory is disabled (ORCH_MEMORY_ENABLED=0).", code="memory_disabled")

    async def list_page(self, principal: str, *, limit: int, after: str | None) -> MemoryPage:
        """One page of the caller's memories, oldest first."""
        entries, more = await self.page(principal, limit=limit, after=after)
        data = [entry.as_dict() for entry in entries]
        return MemoryPage(
            data=data,
            first_id=data[0]["id"] if data else None,
            last_id=data[-1]["id"] if data else None,
            has_more=more,
        )

    async def read(self, principal: str, memory_id: str) -> dict[str, Any]:
        """One of the caller's memories; another caller's is as missing as an unknown id (404)."""
        entry = await self.get(principal, memory_id)
        if entry is None:
            raise _not_found(memory_id)
        return entry.as_dict()

    def _receipt(self, request_id: str, principal: str, route: str) -> Trace:
        return self.tracer.begin(route=route, request_id=request_id, principal=principal, stream=False)

    async def forget(self, principal: str, memory_id: str, *, request_id: str) -> MemoryDeleted:
        """Delete one of the caller's memories (really deleted), with its receipt."""
        trace = self._receipt(request_id, principal, ROUTE + "/{memory_id}")
        try:
            deleted = await self.delete(principal, memory_id, trace)
        finally:
            trace.end()
        if not deleted:
            raise _not_found(memory_id)
        return MemoryDeleted(id=memory_id, deleted=True, request_id=trace.id)

    async def forget_all(self, principal: str, *, request_id: str) -> MemoryDeletedAll:
        """Delete every memory of the caller, with its receipt."""
        trace = self._receipt(request_id, principal, ROUTE)
        try:
            count = await self.delete_all(principal, trace)
        finally:
            trace.end()
        return MemoryDeletedAll(deleted=count, request_id=trace.id)

    async def remember(
        self, content: str, *, principal: str, conversation_id: str | None, request_id: str
    ) -> tuple[dict[str, Any], bool]:
        """Store one memory explicitly through the gate (same scrubbing and decisions as chat
        capture): the body, and whether it is new (False: the same content was refreshed).

        A refusal by the gate is an error naming its reason, with the decision in its ``extra``.
        """
        trace = self._receipt(request_id, principal, ROUTE)
        try:
            outcome = await self.capture(
                content, principal=principal, conversation_id=conversation_id, source="api", trace=trace, explicit=True
            )
        finally:
            trace.end()
        decision = outcome.response()
        extra = {"memory_decision": decision, "request_id": trace.id}
        if outcome.candidate_id is not None:
            entry = await self.get(principal, outcome.candidate_id)
            payload = {
                "memory_decision": decision,
                "memory": entry.as_dict() if entry else None,
                "request_id": trace.id,
            }
            return payload, decision["reason"] != ALLOW_DEDUPE_UPDATE
        raise self._refusal(outcome.reason, extra)

    def _refusal(self, reason: str, extra: dict[str, Any]) -> OrchestratorError:
        if reason == DENY_SENSITIVE_CONTENT:
            return InvalidRequest(
                "The content looks like it contains a credential (a key, token or password); nothing was stored.",
                param="content",
                code="sensitive_content",
                extra=extra,
            )
        if reason == DENY_SCRUBBED_TOO_SHORT:
            return InvalidRequest(
                f"After scrubbing, the content is shorter than {self.config.min_chars} characters "
                "(ORCH_MEMORY_MIN_CHARS); nothing was stored.",
                param="content",
                code="scrubbed_too_short",
                extra=extra,
            )
        if reason == DENY_POLICY_WRITE_DISABLED:
            return PermissionDenied(
                "Memory writes are off (ORCH_MEMORY_WRITE_POLICY=off).", code="memory_write_disabled", extra=extra
            )
        if reason == DENY_FEATURE_DISABLED:
            return ServiceUnavailable(
                "Memory capture is disabled (ORCH_MEMORY_CAPTURE_ENABLED=0).",
                code="memory_capture_disabled",
                extra=extra,
            )
        if reason == DENY_ERROR:
            return InternalError("The memory could not be stored.", code="memory_error", extra=extra)
        return InternalError(f"Unexpected memory decision {reason}.", extra=extra)  # pragma: no cover

    # --- TTL -------------------------------------------------------------------------------
    async def purge_once(self) -> int:
        if self.store is None:
            return 0
        purged = await self.store.purge_expired()
        if purged and self._purged is not None:
            self._purged.inc(purged)
        if purged:
            log.info("expired memories purged", extra={"count": purged})
        return purged

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.purge_interval)
            try:
                await self.purge_once()
            except Exception as exc:  # the next round tries again; the reads filter expiry anyway
                log.error("memory purge failed", extra={"error_type": type(exc).__name__})

    async def start(self) -> None:
        """Purge what expired while the service was down, then every ``purge_interval`` seconds."""
        if self.store is None or self._purger is not None:
            return
        await self.purge_once()
        self._purger = asyncio.create_task(self._purge_loop(), name="memory-purge")

    async def stop(self) -> None:
        await cancel_and_wait(self._purger)
        self._purger = None


def last_user_text(messages: list[dict[str, Any]]) -> tuple[int, str] | None:
    """The index and text of the last user message (text parts joined), or None."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return index, content
        if isinstance(content, list):
            parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            return index, " ".join(p for p in parts if isinstance(p, str))
        return index, ""
    return None


class MemoryStage:
    """The first pipeline stage: the capture decision, then recall.

    The decision is made here, but an allowed memory is written only once every stage has
    accepted the request (``turn.after_stages``): a request refused later (an unknown agent, say)
    stores nothing.
    """

    name = "memory"

    def __init__(self, service: MemoryService) -> None:
        self.service = service

    async def run(self, turn: Turn) -> None:
        service = self.service
        if not service.config.enabled:
            turn.decisions.memory_decision = DISABLED_DECISION
            return
        found = last_user_text(turn.request.messages)
        text = found[1] if found else ""
        principal, conversation = turn.ctx.principal.id, turn.ctx.conversation_id
        in_conversation = conversation is not None
        verdict = decide(text, service.config)
        if verdict.allowed:

            async def commit() -> None:
                outcome = await service.store_verdict(
                    verdict, principal=principal, conversation_id=conversation, source="chat"
                )
                turn.decisions.memory_decision = outcome.response()
                service.record(turn.trace, outcome, conversation=in_conversation, source="chat")

            def abort() -> None:
                # A later stage refused the request: nothing was stored, and the answer says so.
                outcome = Outcome(DENY_ERROR, verdict)
                turn.decisions.memory_decision = outcome.response()
                service.record(
                    turn.trace, outcome, conversation=in_conversation, source="chat", detail="request_refused"
                )

            turn.after_stages.append(commit)
            turn.on_abort.append(abort)
        else:
            outcome = Outcome(verdict.reason, verdict)
            turn.decisions.memory_decision = outcome.response()
            service.record(turn.trace, outcome, conversation=in_conversation, source="chat")
        if service.recall_enabled and found is not None and text:
            await self._recall(turn, found[0], text)

    async def _recall(self, turn: Turn, index: int, text: str) -> None:
        service = self.service
        try:
            memories = await service.recall(turn.ctx.principal.id, turn.ctx.conversation_id, text)
        except Exception as exc:  # recall helps; it never fails a request
            log.error("memory recall failed", extra={"error_type": type(exc).__name__})
            turn.trace.step("memory_recall", {"ids": [], "error": type(exc).__name__})
            return
        message, used = service.recall_message(memories)
        turn.trace.step("memory_recall", {"ids": used, "count": len(used)})
        if message is None:
            return
        # Right before the last user message: an agent's system prompt (first) stays first.
        messages = list(turn.request.messages)
        messages.insert(index, message)
        turn.request.messages = messages
        turn.memory_message = message
