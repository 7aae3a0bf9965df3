"""Every receipt step, defined once: its payload's fields (a TypedDict checked by mypy at every
``trace.step`` call), when it is written, and how its values are kept out of the receipt.

Adding a field to a receipt is a change here (the TypedDict and the row below), at the one call
site that writes it, and in docs/receipts.md (whose table is :func:`table`'s output; a test
compares the two: ``python -m app.receipts.steps`` prints it).

Nothing here runs per step: the TypedDicts are types only, and the tracer stores a payload as it
was given (scrubbed, see :data:`SCRUB`), so receipts written before these definitions verify
unchanged.
"""

# No `from __future__ import annotations`: TypedDict reads NotRequired from evaluated annotations.
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict, get_args

# What the tracer does to every payload before it is stored (app/scrub.py, Tracer._payload_json),
# whatever the step: the per-step rules below are what the code that writes the step does first.
SCRUB = (
    "fields named like a credential are withheld whole; credential values (and, with "
    "ORCH_MEMORY_SCRUB_REDACT_PII, email addresses and phone numbers) inside other strings become "
    "[REDACTED]; strings are capped at 4000 characters"
)

StepType = Literal[
    "request",
    "policy_snapshot",
    "llm_provider",
    "error",
    "agent",
    "route_decision",
    "intent_router",
    "semantic_router",
    "tool_round",
    "tool_result",
    "tool_approval",
    "tool_approval_decision",
    "memory_decision",
    "memory_recall",
    "memory_delete",
]


class RequestStep(TypedDict):
    route: str
    stream: bool
    principal: str
    request_id: str
    policy_hash: NotRequired[str]
    agent: NotRequired[str]
    memory_decision: NotRequired[str]


class PolicySnapshotStep(TypedDict):
    tool: str
    policy_hash: str
    policy_enforced: bool
    decision: str
    rule: str | None
    reason: str
    args_hash: str


class LlmProviderStep(TypedDict):
    provider: str
    model: str
    stream: bool
    latency_ms: float
    attempts: int
    finish_reason: str | None
    truncated: bool
    usage: dict[str, int] | None
    outcome: str
    choices: NotRequired[int]
    first_piece_ms: NotRequired[float | None]


class ErrorStep(TypedDict):
    status: int
    type: str
    code: str | None
    message: NotRequired[str]


class AgentStep(TypedDict):
    agent: str
    reason: str
    replaced_system_prompt: bool
    tools: list[str]
    model: str


class RouteDecisionStep(TypedDict, total=False):
    """Assembled from the routing decision's fields (app/routing/stage.py), so the extra keys of
    an outcome ride along: the call site casts."""

    route: str
    tool: str | None
    agent: str | None
    model: str | None
    rule: str | None
    tier: str | None
    confidence: float | None
    gap: float | None
    reason: str | None
    outcome: str
    action: str
    proposed: str | None
    review_id: str | None
    decision_id: str
    param_keys: list[str]
    params_sha256: str


class IntentRouterStep(TypedDict, total=False):
    """The intent decision (app/routing/intent.py ``Decision.as_dict``) without its arguments'
    values; the call site casts."""

    decision_id: str
    policy_hash: str
    tier_used: str | None
    intent_id: str | None
    route: str
    rule: str | None
    confidence: float | None
    gap: float | None
    runner_up: Any
    requires_hitl: bool
    deny_reason: str | None
    reason: str | None
    cacheable: bool
    evidence: dict[str, Any]
    shadow: bool
    agrees: bool
    param_keys: list[str]
    params_sha256: str


class SemanticRouterStep(TypedDict, total=False):
    """The semantic tier's scores (app/routing/semantic.py); the call site casts."""

    candidates: list[dict[str, Any]]
    decided: bool
    shadow: bool


class ToolRoundStep(TypedDict):
    round: int
    tools: list[str]


class ToolResultStep(TypedDict):
    tool: str
    status: str
    error: str | None
    param: NotRequired[str | None]
    args_hash: NotRequired[str]
    approval_reason: NotRequired[Any]
    exit_code: NotRequired[Any]
    sandboxed: NotRequired[bool]
    truncated: NotRequired[Any]
    duration_ms: NotRequired[float]
    output_sha256: NotRequired[str]


class ToolApprovalStep(TypedDict):
    tool: str
    approved: bool
    reason: str
    approval_id: NotRequired[str | None]
    approval_ref: NotRequired[str | None]
    approval_status: NotRequired[str]
    expires_at: NotRequired[str | None]
    why: NotRequired[str]


class ToolApprovalDecisionStep(TypedDict):
    approval_id: str | None
    approval_ref: str
    tool: str
    args_hash: str
    status: str
    requested_by: str | None
    expires_at: Any


class MemoryDecisionStep(TypedDict):
    decision: str
    reason: str
    explicit_intent: bool
    write_policy: str
    scrub_applied: bool
    redactions: Any
    ttl_minutes: int | None
    scope: str
    source: str
    candidate_id_hash: NotRequired[str]
    detail: NotRequired[str]


class MemoryRecallStep(TypedDict):
    ids: list[str]
    count: NotRequired[int]
    error: NotRequired[str]


class MemoryDeleteStep(TypedDict):
    count: int
    all: NotRequired[bool]
    candidate_id_hash: NotRequired[str]


@dataclass(frozen=True, slots=True)
class StepDef:
    payload: type  # the TypedDict
    when: str
    redaction: str  # what the writer withholds or hashes before the tracer's scrub
    notes: str = ""


STEPS: dict[StepType, StepDef] = {
    "request": StepDef(
        RequestStep,
        "first, always",
        "no caller text",
        "`request_id` is the caller's `X-Request-ID` or the generated one; `policy_hash` is the hash of the "
        "policy files and enforcement flags in force (see *Audit*); `agent` when one was addressed; with memory "
        'off, `memory_decision: "deny:feature_disabled"` (the same for every chat, so it rides here rather than '
        "in a row of its own)",
    ),
    "policy_snapshot": StepDef(
        PolicySnapshotStep,
        "a tool execution",
        "arguments as `args_hash` only",
        "the `policy_hash` and the tool policy's decision",
    ),
    "llm_provider": StepDef(
        LlmProviderStep,
        "after the model answered, the stream ended, or the caller left",
        "no prompt, no reply; `usage` is the three counts, never the upstream's `*_tokens_details`",
        "`outcome` is `completed`; `client_disconnected` when the caller went away before the answer was "
        "complete, whole or streamed, before or after the first byte (the upstream call was cancelled then, see "
        "[providers.md](providers.md); a request the service cut when its shutdown grace ran out is recorded so "
        "too); for streams also `error`. A request whose caller left has no `error` step. `first_piece_ms` for "
        "streams only (null when the caller left before the first piece). With `n` > 1 the step is still one: "
        "`finish_reason` and `truncated` are the first choice's, `choices` is the count (absent when n is 1), "
        "`usage` covers all of them (for Ollama, the sum of its n calls)",
    ),
    "error": StepDef(
        ErrorStep,
        "when the request failed",
        "the message of our own errors only; a bug is recorded by its exception's type (`code`)",
    ),
    "agent": StepDef(
        AgentStep,
        "an agent applied (addressed or routed)",
        "not the system prompt",
        "`reason` is `requested` or `routed`",
    ),
    "route_decision": StepDef(
        RouteDecisionStep,
        "advanced mode, every request",
        "tool arguments as `param_keys` + `params_sha256`, never their values",
    ),
    "intent_router": StepDef(
        IntentRouterStep,
        "the intent router ran (deciding or in shadow)",
        "arguments as in `route_decision`",
        "the `intent_decision`; `shadow`, `agrees` in shadow mode",
    ),
    "semantic_router": StepDef(
        SemanticRouterStep,
        "the semantic tier scored the request",
        "tool names and scores, never the message",
    ),
    "tool_round": StepDef(ToolRoundStep, "each round of the tool loop", "tool names only"),
    "tool_result": StepDef(
        ToolResultStep,
        "a tool call ended (run or refused)",
        "arguments as `args_hash`, output as `output_sha256`",
    ),
    "tool_approval": StepDef(
        ToolApprovalStep,
        "a tool call needed a person's approval",
        "a refused token is named by `approval_ref` (a hash), never its value",
    ),
    "tool_approval_decision": StepDef(
        ToolApprovalDecisionStep,
        "an approval was issued, approved or denied",
        "a directly issued token is named by `approval_ref` (a hash) only",
    ),
    "memory_decision": StepDef(
        MemoryDecisionStep,
        "memory enabled, every chat; `POST /v1/memory`",
        "never the content; the memory by `candidate_id_hash`",
        "`reason` is the same as the response's `memory_decision`; `scope` is `global` or `conversation` "
        "([memory.md](memory.md))",
    ),
    "memory_recall": StepDef(
        MemoryRecallStep,
        "recall enabled, a chat with words to search",
        "ids only, never the content",
        "`ids` of the memories added to the prompt; `error` (its type) when recall failed",
    ),
    "memory_delete": StepDef(
        MemoryDeleteStep,
        "`DELETE /v1/memory[/{id}]`",
        "never the content; the deleted id as `candidate_id_hash`",
    ),
}


def fields(payload: type) -> list[str]:
    """A payload's fields, optional ones marked with ``?``, in definition order."""
    optional: frozenset[str] = getattr(payload, "__optional_keys__", frozenset())
    return [f"`{name}`" + ("?" if name in optional else "") for name in payload.__annotations__]


def table() -> str:
    """The step table of docs/receipts.md ("What is recorded")."""
    lines = ["| Step | When | Payload (`?`: not always present) | Kept out |", "|---|---|---|---|"]
    for name, step in STEPS.items():
        payload = ", ".join(fields(step.payload))
        if step.notes:
            payload += f". {step.notes}"
        lines.append(f"| `{name}` | {step.when} | {payload} | {step.redaction} |")
    return "\n".join(lines) + "\n"


assert set(STEPS) == set(get_args(StepType)), "every step type has its definition"

if __name__ == "__main__":
    print(table(), end="")
