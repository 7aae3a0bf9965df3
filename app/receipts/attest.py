"""A trace as an in-toto attestation: a Statement (v1) whose subject is the trace (its id, and its
head hash as the sha256 digest) and whose predicate lists the decisions its hashed steps record,
in a DSSE envelope signed with the receipt log's Ed25519 key, for people who already run in-toto
or Sigstore tooling.

Standard library only (``scripts/verify_receipts.py`` checks envelopes with it); the signature
itself is made by :class:`app.receipts.notes.Signer` and checked with ``cryptography``.

DSSE signs the pre-authentication encoding, never the payload alone, so that a signature made for
one payload type cannot pass for another:
``PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` (LEN: the byte length in
ASCII decimal, SP: one space).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://orchestrators.local/attestation/receipt-decisions/v1"
SUBJECT_PREFIX = "orchestrators-trace:"

_ROUTING_FIELDS = (
    "route",
    "tool",
    "agent",
    "model",
    "rule",
    "tier",
    "confidence",
    "reason",
    "outcome",
    "review_id",
    "decision_id",
    "param_keys",
    "params_sha256",
)
_MODEL_FIELDS = ("provider", "model", "finish_reason", "outcome", "attempts", "truncated")
_TOOL_FIELDS = ("tool", "status", "args_hash", "output_sha256", "exit_code", "approval_id", "error")
_APPROVAL_FIELDS = ("tool", "approved", "reason", "approval_id")
_MEMORY_FIELDS = ("decision", "reason", "explicit_intent", "write_policy", "scope", "source")


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding (protocol.md, "Signature definition")."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def _pick(payload: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {key: payload[key] for key in fields if key in payload}


def decisions(steps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a trace's hashed steps record having decided: the route, the model, tool calls with
    their argument hashes, approvals, the memory decision (values as stored: already redacted)."""
    request: dict[str, Any] = {}
    routing: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    approvals: list[dict[str, Any]] = []
    memory: list[Any] = []
    agents: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for step in steps:
        payload = json.loads(step["step_json"]).get("payload")
        if not isinstance(payload, dict):
            continue
        kind = step["step_type"]
        if kind == "request" and not request:
            request = _pick(payload, ("route", "stream", "principal", "request_id", "policy_hash", "agent"))
            if "memory_decision" in payload:
                memory.append(payload["memory_decision"])
        elif kind in ("route_decision", "intent_router"):
            inner = payload.get("intent_decision")
            picked = {**_pick(inner, _ROUTING_FIELDS)} if isinstance(inner, dict) else {}
            routing.append({"step": kind, **picked, **_pick(payload, _ROUTING_FIELDS)})
        elif kind == "llm_provider":
            models.append(_pick(payload, _MODEL_FIELDS))
        elif kind == "tool_result":
            tools.append(_pick(payload, _TOOL_FIELDS))
        elif kind == "tool_approval":
            approvals.append(_pick(payload, _APPROVAL_FIELDS))
        elif kind == "memory_decision":
            memory.append(_pick(payload, _MEMORY_FIELDS))
        elif kind == "agent":
            agents.append(_pick(payload, ("agent", "reason", "model", "tools")))
        elif kind == "error":
            errors.append(_pick(payload, ("status", "type", "code")))
    approval_ids = sorted(
        {entry["approval_id"] for entry in (*tools, *approvals) if isinstance(entry.get("approval_id"), str)}
    )
    return {
        "request": request,
        "route": request.get("route"),
        "routing": routing,
        "model": models[-1].get("model") if models else None,
        "models": models,
        "agents": agents,
        "tool_calls": tools,
        "approvals": approvals,
        "approval_ids": approval_ids,
        "memory_decision": memory[-1] if memory else None,
        "memory_decisions": memory,
        "errors": errors,
    }


def statement(
    trace: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    *,
    head_hash: str,
    ledger_entry: Mapping[str, Any] | None,
    entry_text: str | None,
    checkpoint: str | None,
) -> dict[str, Any]:
    """The in-toto Statement v1 of a trace (see the module docstring and docs/receipts.md)."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": SUBJECT_PREFIX + str(trace["id"]), "digest": {"sha256": head_hash}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "trace_id": trace["id"],
            "principal": trace.get("principal"),
            "created_at": trace.get("created_at"),
            "finished_at": trace.get("finished_at"),
            "step_count": len(steps),
            "head_hash": head_hash,
            "ledger": {"seq": int(ledger_entry["seq"]), "entry": entry_text} if ledger_entry else None,
            "checkpoint": checkpoint,
            **decisions(steps),
        },
    }


def envelope(body: bytes, signature: bytes, key_id: str) -> dict[str, Any]:
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode("ascii"),
        "signatures": [{"keyid": key_id, "sig": base64.b64encode(signature).decode("ascii")}],
    }


def open_envelope(env: Mapping[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """An envelope's payload and its (keyid, signature) pairs, checked for form only; raises
    ValueError."""
    if env.get("payloadType") != PAYLOAD_TYPE:
        raise ValueError(f"not an in-toto DSSE envelope (payloadType {str(env.get('payloadType'))[:80]!r})")
    body = base64.b64decode(str(env.get("payload", "")), validate=True)
    signatures = env.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise ValueError("the envelope has no signatures")
    pairs = []
    for entry in signatures:
        if not isinstance(entry, dict) or not isinstance(entry.get("sig"), str):
            raise ValueError("a signature entry is malformed")
        pairs.append((str(entry.get("keyid", "")), base64.b64decode(entry["sig"], validate=True)))
    return body, pairs
