"""The memory gate over HTTP, on SQLite and on the real Postgres server: every decision with its
true reason in the response and in the receipt, scrubbing, dedupe, scopes, the caller's routes,
TTL, and bad input that stores nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.lifespan import AppState
from tests.conftest import Backend, assert_envelope, running

CHAT = "/v1/chat/completions"
MEMORY = "/v1/memory"
ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"
STRICT = {"memory_enabled": True, "memory_capture_enabled": True, "memory_write_policy": "strict"}


def said(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


@asynccontextmanager
async def memory_app(
    app_factory: Callable[..., FastAPI], backend: Backend, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    values: dict[str, Any] = {**STRICT, "trust_panel_enabled": True, **backend.settings}
    if backend.name == "sqlite":  # one file, so that the test can read the table directly
        values["memory_db_path"] = backend.settings["trace_db_path"]
    values.update(settings)
    app = app_factory(**values)
    async with running(app) as client:
        yield client, app.state.orch


async def steps(client: httpx.AsyncClient, state: AppState, trace_id: str) -> list[dict[str, Any]]:
    await state.tracer.flush()
    report = (await client.get(f"/v1/trust/trace/{trace_id}")).json()
    found: list[dict[str, Any]] = report["steps"]
    return found


async def decision_step(client: httpx.AsyncClient, state: AppState, trace_id: str) -> dict[str, Any]:
    [step] = [s for s in await steps(client, state, trace_id) if s["step_type"] == "memory_decision"]
    payload: dict[str, Any] = step["payload"]
    return payload


async def chat(client: httpx.AsyncClient, text: str, **headers: str) -> dict[str, Any]:
    response = await client.post(CHAT, json=said(text), headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_off_by_default_every_chat_says_feature_disabled_and_routes_answer_503(
    app_factory: Callable[..., FastAPI],
) -> None:
    app = app_factory(trust_panel_enabled=True)
    async with running(app) as client:
        body = await chat(client, "remember that deployments happen on Fridays")
        assert body["memory_decision"] == {"decision": "deny", "reason": "deny:feature_disabled", "candidate_id": None}
        # the receipt has the decision too, on the request step (no row of its own for a constant)
        recorded = await steps(client, app.state.orch, body["request_id"])
        assert recorded[0]["step_type"] == "request"
        assert recorded[0]["payload"]["memory_decision"] == "deny:feature_disabled"
        assert "memory_decision" not in [s["step_type"] for s in recorded]
        for method, path in (("GET", MEMORY), ("POST", MEMORY), ("DELETE", MEMORY), ("GET", MEMORY + "/x")):
            response = await client.request(method, path, json={"content": "x"} if method == "POST" else None)
            error = assert_envelope(response, 503)
            assert error["code"] == "memory_disabled" and "ORCH_MEMORY_ENABLED" in error["message"]
        stranger = await client.get(MEMORY, headers={"Authorization": "Bearer wrong"})
        assert_envelope(stranger, 401)  # auth first: strangers do not learn the setting
    assert not (app.state.orch.settings.memory_db_path).exists()  # nothing opened


async def test_strict_capture_dedupe_and_the_true_reason_in_response_and_receipt(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    async with memory_app(app_factory, backend) as (client, state):
        first = await chat(client, "Please remember that: deployments happen on Fridays at 10:00")
        decision = first["memory_decision"]
        assert decision["decision"] == "allow" and decision["reason"] == "allow:explicit_intent"
        memory_id = decision["candidate_id"]
        assert len(decision["candidate_id_hash"]) == 12
        step = await decision_step(client, state, first["request_id"])
        assert step["reason"] == "allow:explicit_intent" and step["candidate_id_hash"] == decision["candidate_id_hash"]
        assert step["write_policy"] == "strict" and step["explicit_intent"] is True and step["scope"] == "global"
        assert "deployments" not in json.dumps(step)  # receipts record the decision, never the content

        again = await chat(client, "please remember that   DEPLOYMENTS happen on Fridays at 10:00")
        assert again["memory_decision"]["reason"] == "allow:dedupe_update"
        assert again["memory_decision"]["candidate_id"] == memory_id
        assert (await decision_step(client, state, again["request_id"]))["reason"] == "allow:dedupe_update"

        entry = (await client.get(f"{MEMORY}/{memory_id}")).json()
        assert entry["content"] == "deployments happen on Fridays at 10:00"  # lead-in and phrase removed
        assert entry["passes"] == 2 and entry["scope"] == "global" and entry["source"] == "chat"
        rows = await backend.fetch("SELECT content, passes FROM memory_candidates")
        assert rows == [{"content": "deployments happen on Fridays at 10:00", "passes": 2}]


async def test_every_deny_reason_is_reported_as_it_is(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    secret = "ghp_" + "a1B2c3D4e5" * 3
    cases = [
        ("hello there, how are you today?", "deny:no_explicit_intent"),
        ("remember this: ok", "deny:scrubbed_too_short"),
        (f"remember that my token is {secret}", "deny:sensitive_content"),
    ]
    async with memory_app(app_factory, backend) as (client, state):
        for text, reason in cases:
            body = await chat(client, text)
            assert body["memory_decision"] == {"decision": "deny", "reason": reason, "candidate_id": None}, text
            assert (await decision_step(client, state, body["request_id"]))["reason"] == reason
        await state.tracer.flush()
        dump = json.dumps(await backend.fetch("SELECT step_json FROM trace_steps"))
        assert secret not in dump
    assert await backend.fetch("SELECT id FROM memory_candidates") == []


async def test_one_switch_turns_memory_on_with_its_safe_defaults(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    # ORCH_MEMORY_ENABLED=1 alone: capture on, policy strict (only what the user asks to keep).
    only = {"memory_enabled": True, "memory_capture_enabled": None, "memory_write_policy": None}
    async with memory_app(app_factory, backend, **only) as (client, _):
        body = await chat(client, "Please remember that deployments happen on Fridays")
        assert body["memory_decision"]["reason"] == "allow:explicit_intent"
        assert (await chat(client, "hello there, how are you today?"))["memory_decision"]["reason"] == (
            "deny:no_explicit_intent"
        )
        posted = await client.post(MEMORY, json={"content": "the cat is called Tom"})
        assert posted.status_code == 201, posted.text
        stored = [entry["content"] for entry in (await client.get(MEMORY)).json()["data"]]
        assert stored == ["deployments happen on Fridays", "the cat is called Tom"]
    # the finer flags still refine it: capture can be turned off explicitly
    async with memory_app(app_factory, backend, **{**only, "memory_capture_enabled": False}) as (client, _):
        body = await chat(client, "remember that the dog is called Rex")
        assert body["memory_decision"]["reason"] == "deny:feature_disabled"


async def test_policy_off_and_capture_off_are_named(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    async with memory_app(app_factory, backend, memory_write_policy="off") as (client, _):
        body = await chat(client, "remember that the cat is called Tom")
        assert body["memory_decision"]["reason"] == "deny:policy_write_disabled"
        error = assert_envelope(await client.post(MEMORY, json={"content": "the cat is called Tom"}), 403)
        assert "ORCH_MEMORY_WRITE_POLICY" in error["message"]
    async with memory_app(app_factory, backend, memory_capture_enabled=False) as (client, _):
        body = await chat(client, "remember that the cat is called Tom")
        assert body["memory_decision"]["reason"] == "deny:feature_disabled"
        response = await client.post(MEMORY, json={"content": "the cat is called Tom"})
        error = assert_envelope(response, 503)
        assert "ORCH_MEMORY_CAPTURE_ENABLED" in error["message"]
        assert response.json()["memory_decision"]["reason"] == "deny:feature_disabled"
        assert (await client.get(MEMORY)).json()["data"] == []  # reading still works
    assert await backend.fetch("SELECT id FROM memory_candidates") == []


async def test_capture_only_stores_plain_messages_with_personal_data_redacted(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    async with memory_app(app_factory, backend, memory_write_policy="capture_only") as (client, _):
        body = await chat(client, "My manager is reachable at boss@example.com or (555) 123-4567.")
        assert body["memory_decision"]["reason"] == "allow:capture_only"
        entry = (await client.get(f"{MEMORY}/{body['memory_decision']['candidate_id']}")).json()
    assert entry["content"] == "My manager is reachable at [REDACTED] or [REDACTED]."
    dump = json.dumps(await backend.fetch("SELECT * FROM memory_candidates"), default=str)
    assert "boss@example.com" not in dump and "123-4567" not in dump


async def test_one_caller_never_sees_or_deletes_anothers_memory(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    async with memory_app(app_factory, backend, principals=f"alice={ALICE},bob={BOB}") as (client, _):
        as_alice = {"Authorization": f"Bearer {ALICE}"}
        as_bob = {"Authorization": f"Bearer {BOB}"}
        body = (await client.post(CHAT, json=said("keep in mind that I prefer tea"), headers=as_alice)).json()
        memory_id = body["memory_decision"]["candidate_id"]
        assert memory_id
        assert (await client.get(MEMORY, headers=as_bob)).json()["data"] == []
        assert_envelope(await client.get(f"{MEMORY}/{memory_id}", headers=as_bob), 404)
        assert_envelope(await client.delete(f"{MEMORY}/{memory_id}", headers=as_bob), 404)
        assert (await client.delete(MEMORY, headers=as_bob)).json()["deleted"] == 0
        # Bob saying the same thing gets his own entry, not a dedupe of Alice's.
        bobs = (await client.post(CHAT, json=said("keep in mind that I prefer tea"), headers=as_bob)).json()
        assert bobs["memory_decision"]["reason"] == "allow:explicit_intent"
        assert bobs["memory_decision"]["candidate_id"] != memory_id
        [mine] = (await client.get(MEMORY, headers=as_alice)).json()["data"]
        assert mine["id"] == memory_id
        # A spoofed identity header changes nothing: the scope is the validated principal.
        spoofed = await client.get(MEMORY, headers={**as_bob, "X-User-ID": "alice", "X-Principal": "alice"})
        assert [e["id"] for e in spoofed.json()["data"]] == [bobs["memory_decision"]["candidate_id"]]


async def test_conversation_scope(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    async with memory_app(app_factory, backend) as (client, _):
        body = await chat(client, "remember that the release is named Lynx", **{"X-Conversation-ID": "conv-1"})
        global_one = await chat(client, "remember that the release is named Lynx")
        assert global_one["memory_decision"]["reason"] == "allow:explicit_intent"  # another scope: not a dedupe
        entry = (await client.get(f"{MEMORY}/{body['memory_decision']['candidate_id']}")).json()
    assert entry["scope"] == "conversation:conv-1" and entry["conversation_id"] == "conv-1"


async def test_routes_list_paginate_delete_and_record_deletions_without_content(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    async with memory_app(app_factory, backend) as (client, state):
        ids = []
        for n in range(5):
            response = await client.post(MEMORY, json={"content": f"fact number {n} about the garden"})
            assert response.status_code == 201, response.text
            body = response.json()
            assert body["memory_decision"]["reason"] == "allow:explicit_intent"  # posting is the explicit intent
            assert body["memory"]["content"] == f"fact number {n} about the garden"
            ids.append(body["memory"]["id"])
        again = await client.post(MEMORY, json={"content": "fact number 0 about the garden"})
        assert again.status_code == 200 and again.json()["memory_decision"]["reason"] == "allow:dedupe_update"

        seen: list[str] = []
        after = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
            page = (await client.get(MEMORY, params=params)).json()
            seen += [e["id"] for e in page["data"]]
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert seen == ids

        deleted = await client.delete(f"{MEMORY}/{ids[0]}")
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        assert_envelope(await client.get(f"{MEMORY}/{ids[0]}"), 404)
        assert_envelope(await client.delete(f"{MEMORY}/{ids[0]}"), 404)
        forget = (await client.delete(MEMORY)).json()
        assert forget["deleted"] == 4
        assert (await client.get(MEMORY)).json() == {
            "object": "list",
            "data": [],
            "first_id": None,
            "last_id": None,
            "has_more": False,
        }
        receipt = [s for s in await steps(client, state, forget["request_id"]) if s["step_type"] == "memory_delete"]
        assert receipt[0]["payload"] == {"count": 4, "all": True}
        one = [s for s in await steps(client, state, deleted.json()["request_id"]) if s["step_type"] == "memory_delete"]
        assert one[0]["payload"]["count"] == 1
        await state.tracer.flush()
        assert "garden" not in json.dumps(await backend.fetch("SELECT step_json FROM trace_steps"))
    assert await backend.fetch("SELECT id FROM memory_candidates") == []  # really deleted


async def test_bad_input_gets_the_envelope_and_stores_nothing(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    secret = "AKIA" + "ABCDEFGHIJKLMNOP"
    async with memory_app(app_factory, backend) as (client, _):
        cases: list[tuple[str, str, Any, int, str | None]] = [
            ("POST", MEMORY, b"not json", 400, None),
            ("POST", MEMORY, b"[1]", 400, None),
            ("POST", MEMORY, {}, 400, "content"),
            ("POST", MEMORY, {"content": 5}, 400, "content"),
            ("POST", MEMORY, {"content": ""}, 400, "content"),
            ("POST", MEMORY, {"content": "x" * 100_001}, 400, "content"),
            ("POST", MEMORY, {"content": "a perfectly fine memory", "extra": 1}, 400, "extra"),
            ("POST", MEMORY, {"content": f"the deploy key is {secret} ok"}, 400, "content"),
            ("POST", MEMORY, {"content": "   tiny  "}, 400, "content"),
            ("GET", MEMORY + "/not-an-id", None, 400, None),
            ("DELETE", MEMORY + "/not-an-id", None, 400, None),
            ("GET", MEMORY + "?limit=0", None, 400, "limit"),
            ("GET", MEMORY + "?limit=1000", None, 400, "limit"),
            ("GET", MEMORY + "?after=zzz", None, 400, "after"),
            ("PUT", MEMORY, None, 405, None),
        ]
        for method, path, body, status, param in cases:
            content = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
            response = await client.request(method, path, content=content, headers={"Content-Type": "application/json"})
            assert_envelope(response, status, param=param)
        sensitive = await client.post(MEMORY, json={"content": f"the deploy key is {secret} ok"})
        assert sensitive.json()["error"]["code"] == "sensitive_content"
        assert sensitive.json()["memory_decision"]["reason"] == "deny:sensitive_content"
        # A chat refused by a later stage (unknown agent) stores nothing, and says so.
        refused = await client.post(CHAT, json=said("remember that the boat is blue", model="agent:nobody"))
        assert_envelope(refused, 404)
        assert refused.json()["memory_decision"]["decision"] == "deny"
        assert refused.json()["request_id"]
    assert await backend.fetch("SELECT id FROM memory_candidates") == []


async def test_a_trailing_slash_is_an_unknown_route_not_a_redirect_to_forget_everything(
    app_factory: Callable[..., FastAPI],
) -> None:
    # ``DELETE /v1/memory/{id}`` with an empty id used to be a 307 to ``DELETE /v1/memory``, which
    # a client that follows redirects (requests, httpx, curl -L) sent: every memory was deleted.
    async with running(app_factory(**STRICT)) as client:
        stored = await client.post(MEMORY, json={"content": "remember that the boat is blue"})
        assert stored.status_code == 201, stored.text
        for method, path in [
            ("DELETE", MEMORY + "/"),
            ("DELETE", MEMORY + "/%2F"),
            ("GET", MEMORY + "/"),
            ("GET", "/v1/models/"),
            ("POST", CHAT + "/"),
        ]:
            response = await client.request(method, path, follow_redirects=True)
            assert response.history == [], (method, path)
            assert_envelope(response, 404, type_="not_found_error")
        assert [m["id"] for m in (await client.get(MEMORY)).json()["data"]] == [stored.json()["memory"]["id"]]


async def test_expired_memories_are_never_returned_and_are_purged(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    async with memory_app(app_factory, backend, memory_recall_enabled=True) as (client, state):
        old = (await client.post(MEMORY, json={"content": "the boat is called Aurora"})).json()["memory"]["id"]
        fresh = (await client.post(MEMORY, json={"content": "the car is called Comet"})).json()["memory"]["id"]
        await backend.execute("UPDATE memory_candidates SET expires_ts = 1 WHERE id = $1", old)
        assert_envelope(await client.get(f"{MEMORY}/{old}"), 404)
        assert [e["id"] for e in (await client.get(MEMORY)).json()["data"]] == [fresh]
        body = await chat(client, "what is the boat called?")
        recall = [s for s in await steps(client, state, body["request_id"]) if s["step_type"] == "memory_recall"]
        assert recall[0]["payload"]["ids"] == [fresh]  # "called" matches; the expired one is never used
        # the same content again is a new entry (the expired one is not revived)
        renewed = (await client.post(MEMORY, json={"content": "the boat is called Aurora"})).json()
        assert renewed["memory_decision"]["reason"] == "allow:explicit_intent"
        assert await state.memory.purge_once() == 1
    rows = await backend.fetch("SELECT id FROM memory_candidates ORDER BY created_at")
    assert [r["id"] for r in rows] == [fresh, renewed["memory"]["id"]]


async def test_a_failed_chat_still_reports_the_memory_decision(app_factory: Callable[..., FastAPI]) -> None:
    from tests.fakes.upstream import Reply, fake_upstream

    async with fake_upstream(Reply(status=500, body={"error": {"message": "boom"}})) as fake:
        settings = {**STRICT, "llm_enabled": True, "llm_provider": "openai", "openai_base_url": fake.url}
        async with running(app_factory(**settings)) as client:
            response = await client.post(CHAT, json=said("remember that the shed key is under the pot"))
            assert response.status_code >= 500
            body = response.json()
            assert body["request_id"] and body["memory_decision"]["reason"] == "allow:explicit_intent"
            stored = (await client.get(MEMORY)).json()["data"]
            assert [e["id"] for e in stored] == [body["memory_decision"]["candidate_id"]]


async def test_the_purge_task_runs_in_the_background_and_stops_at_shutdown(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    import asyncio

    backend = Backend("sqlite", {"trace_db_path": tmp_path / "trace.db"})
    async with memory_app(app_factory, backend, memory_purge_interval_sec=1) as (client, state):
        gone = (await client.post(MEMORY, json={"content": "this memory will expire"})).json()["memory"]["id"]
        await backend.execute("UPDATE memory_candidates SET expires_ts = 1 WHERE id = $1", gone)
        for _ in range(30):
            await asyncio.sleep(0.1)
            if not await backend.fetch("SELECT id FROM memory_candidates"):
                break
        assert await backend.fetch("SELECT id FROM memory_candidates") == []
        task = state.memory._purger
        assert task is not None and not task.done()
    assert task.done() and state.memory._purger is None


async def test_deleted_content_is_gone_from_the_sqlite_files(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    backend = Backend("sqlite", {"trace_db_path": tmp_path / "trace.db"})
    marker = "Zanzibarquux"
    async with memory_app(app_factory, backend, memory_db_path=tmp_path / "memory.db") as (client, _):
        for n in range(30):
            await client.post(MEMORY, json={"content": f"filler memory number {n} about gardening"})
        one = (await client.post(MEMORY, json={"content": f"the {marker} project codename"})).json()["memory"]["id"]
        many = [f"{marker} fact {n} for the forget-all route" for n in range(3)]
        for text in many:
            await client.post(MEMORY, json={"content": text}, headers={"X-Conversation-ID": "c9"})
        stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("memory.db"))
        assert marker.encode() in stored  # so that the check below means something
        assert (await client.delete(f"{MEMORY}/{one}")).status_code == 200
        assert (await client.delete(MEMORY)).json()["deleted"] == 33
        files = [p for p in tmp_path.iterdir() if p.name.startswith("memory.db")]
        assert files
        for path in files:
            assert marker.encode() not in path.read_bytes(), path.name
            assert marker.lower().encode() not in path.read_bytes(), path.name  # the FTS index's tokens


async def test_the_agent_chat_route_goes_through_the_gate(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    backend = Backend("sqlite", {"trace_db_path": tmp_path / "trace.db"})
    async with memory_app(app_factory, backend) as (client, _):
        response = await client.post(
            "/v1/agents/holly/chat",
            json=said("make a note: the printer is on floor 3"),
            headers={"X-Conversation-ID": "k"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["agent"]
        assert body["memory_decision"]["reason"] == "allow:explicit_intent"
        [entry] = (await client.get(MEMORY)).json()["data"]
    assert entry["content"] == "the printer is on floor 3" and entry["scope"] == "conversation:k"


async def test_decisions_and_purges_are_counted_in_metrics(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    backend = Backend("sqlite", {"trace_db_path": tmp_path / "trace.db"})
    async with memory_app(app_factory, backend) as (client, state):
        await chat(client, "hello there, nothing to keep")
        await chat(client, "remember that the bins go out on Tuesday")
        await chat(client, "remember that the bins go out on Tuesday")
        gone = (await client.post(MEMORY, json={"content": "this one expires now"})).json()["memory"]["id"]
        await backend.execute("UPDATE memory_candidates SET expires_ts = 1 WHERE id = $1", gone)
        assert await state.memory.purge_once() == 1
        text = (await client.get("/metrics")).text
    assert 'orch_memory_decisions_total{reason="deny:no_explicit_intent"} 1.0' in text
    assert 'orch_memory_decisions_total{reason="allow:explicit_intent"} 2.0' in text
    assert 'orch_memory_decisions_total{reason="allow:dedupe_update"} 1.0' in text
    assert "orch_memory_purged_total 1.0" in text


async def test_a_broken_memory_database_is_deny_error_and_never_fails_the_chat(
    app_factory: Callable[..., FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    app = app_factory(**STRICT, memory_recall_enabled=True, trust_panel_enabled=True)
    async with running(app) as client:
        state: AppState = app.state.orch
        assert state.memory.store is not None
        await state.memory.store.db.close()  # the database goes away under the running service
        body = await chat(client, "remember that the spare key is in the blue pot")
        assert body["memory_decision"] == {"decision": "deny", "reason": "deny:error", "candidate_id": None}
        assert body["choices"][0]["message"]["content"]  # the chat itself was answered
        assert (await decision_step(client, state, body["request_id"]))["reason"] == "deny:error"
        posted = await client.post(MEMORY, json={"content": "the spare key is in the blue pot"})
        error = assert_envelope(posted, 500)
        assert error["code"] == "memory_error" and posted.json()["memory_decision"]["reason"] == "deny:error"
    logged = " ".join(str(record.__dict__) for record in caplog.records)
    assert "memory capture failed" in logged and "blue pot" not in logged
