"""The DSSE encoding against the specification's own test vector, and the decisions a trace's
predicate lists, from steps of every kind that records one."""

from __future__ import annotations

import json
from typing import Any

from app.receipts.attest import decisions, pae


def test_pae_is_the_dsse_specification_vector() -> None:
    # DSSE protocol.md, "Test Vectors": PAYLOAD_TYPE http://example.com/HelloWorld, body "hello world".
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("", b"") == b"DSSEv1 0  0 "
    assert pae("t\u00e9", b"\x00\xff") == b"DSSEv1 3 t\xc3\xa9 2 \x00\xff"  # lengths in bytes, not characters


def step(step_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"step_type": step_type, "step_json": json.dumps({"payload": payload, "step_type": step_type})}


def test_the_predicate_lists_every_recorded_decision() -> None:
    steps = [
        step("request", {"route": "/v1/chat/completions", "principal": "alice", "policy_hash": "p" * 64}),
        step(
            "route_decision",
            {
                "route": "tool",
                "tool": "calc",
                "rule": "r1",
                "tier": 0,
                "param_keys": ["x"],
                "params_sha256": "a" * 64,
                "decision_id": "d1",
                "ignored": "no",
            },
        ),
        step(
            "intent_router",
            {"intent_decision": {"tier": 2, "confidence": 0.9}, "param_keys": [], "params_sha256": "b" * 64},
        ),
        step("tool_approval", {"tool": "python_exec", "approved": True, "reason": "approved", "approval_id": "ap-1"}),
        step(
            "tool_result",
            {
                "tool": "python_exec",
                "status": "ok",
                "args_hash": "c" * 64,
                "output_sha256": "d" * 64,
                "exit_code": 0,
                "approval_id": "ap-1",
            },
        ),
        step("llm_provider", {"provider": "openai", "model": "m-1", "finish_reason": "stop", "latency_ms": 5}),
        step("memory_decision", {"decision": "deny", "reason": "no_intent", "scope": "global"}),
    ]
    got = decisions(steps)
    assert got["route"] == "/v1/chat/completions" and got["request"]["principal"] == "alice"
    assert got["routing"][0] == {
        "step": "route_decision",
        "route": "tool",
        "tool": "calc",
        "rule": "r1",
        "tier": 0,
        "decision_id": "d1",
        "param_keys": ["x"],
        "params_sha256": "a" * 64,
    }
    assert got["routing"][1]["tier"] == 2 and got["routing"][1]["params_sha256"] == "b" * 64
    assert got["tool_calls"] == [
        {
            "tool": "python_exec",
            "status": "ok",
            "args_hash": "c" * 64,
            "output_sha256": "d" * 64,
            "exit_code": 0,
            "approval_id": "ap-1",
        }
    ]
    assert got["approvals"][0]["approved"] is True and got["approval_ids"] == ["ap-1"]
    assert got["model"] == "m-1" and "latency_ms" not in got["models"][0]
    assert got["memory_decision"] == {"decision": "deny", "reason": "no_intent", "scope": "global"}
