"""Receipts on SQLite and on the real Postgres server: what is recorded, the hash chain, the
trust panel, tampering detected in the database itself, export and offline verification."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

import app.receipts.trust as trust_module
from app.lifespan import AppState
from app.receipts.chain import link
from tests.conftest import Backend, assert_envelope, running
from tests.fakes.tcp_proxy import tcp_proxy

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


@asynccontextmanager
async def panel(
    app_factory: Callable[..., FastAPI], backend: Backend, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    app = app_factory(trust_panel_enabled=True, **backend.settings, **settings)
    async with running(app) as client:
        yield client, app.state.orch


async def chat(client: httpx.AsyncClient, state: AppState, **headers: str) -> str:
    response = await client.post(CHAT, json=HELLO, headers=headers)
    assert response.status_code == 200
    await state.tracer.flush()
    trace_id: str = response.json()["request_id"]
    return trace_id


async def verify(client: httpx.AsyncClient, trace_id: str, **params: str) -> dict[str, Any]:
    response = await client.get(f"/v1/trust/verify/{trace_id}", params=params)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_chat_leaves_an_ordered_chained_receipt(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    async with panel(app_factory, backend) as (client, state):
        trace_id = await chat(client, state, **{"X-Request-ID": "caller-req-7"})
        report = (await client.get(f"/v1/trust/trace/{trace_id}")).json()
    assert [s["step_type"] for s in report["steps"]] == ["request", "llm_provider"]
    assert [s["seq"] for s in report["steps"]] == [1, 2]
    request, provider = (s["payload"] for s in report["steps"])
    policy_hash = request.pop("policy_hash")
    assert request == {
        "route": CHAT,
        "stream": False,
        "principal": "owner",
        "request_id": "caller-req-7",
        "memory_decision": "deny:feature_disabled",  # memory is off: the decision rides on this step
    }
    assert len(policy_hash) == 64
    assert provider["provider"] == "demo" and provider["attempts"] == 1 and provider["truncated"] is False
    assert provider["latency_ms"] >= 0 and provider["usage"]["total_tokens"] > 0
    # the chain, computed when written
    prev = "0" * 64
    for step in report["steps"]:
        assert step["prev_hash"] == prev
        prev = step["step_hash"]
    assert report["head_hash"] == prev and report["verified"] and report["ledger_seq"] == 1
    assert report["metadata"]["request_id"] == "caller-req-7"


async def test_the_trace_metadata_is_its_hashed_request_step(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    """The request fields are stored once, in the hashed request step; a trace written by an
    earlier version with its copy in ``metadata_json`` (and no request step left) still shows it."""
    async with panel(app_factory, backend) as (client, state):
        trace_id = await chat(client, state, **{"X-Request-ID": "caller-req-8"})
        rows = await backend.fetch("SELECT metadata_json FROM traces WHERE id = $1", trace_id)
        assert rows == [{"metadata_json": ""}]
        bundle = (await client.get(f"/v1/trust/trace/{trace_id}/export")).json()
        assert bundle["trace"]["metadata"]["request_id"] == "caller-req-8"
        assert bundle["trace"]["metadata"] == json.loads(bundle["steps"][0]["step_json"])["payload"]
        old_style = json.dumps({"route": CHAT, "request_id": "from-the-copy"})
        await backend.execute("UPDATE traces SET metadata_json = $1 WHERE id = $2", old_style, trace_id)
        await backend.execute("DELETE FROM trace_steps WHERE trace_id = $1 AND step_type = 'request'", trace_id)
        report = (await client.get(f"/v1/trust/trace/{trace_id}")).json()
    assert report["metadata"] == {"route": CHAT, "request_id": "from-the-copy"}
    assert not report["verified"]  # and the missing step is still caught


async def test_verify_intact_match_and_mismatch(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    async with panel(app_factory, backend) as (client, state):
        trace_id = await chat(client, state)
        intact = await verify(client, trace_id)
        assert intact["verified"] and intact["reason"] == "intact" and intact["step_count"] == 2
        match = await verify(client, trace_id, expected_hash=intact["head_hash"])
        assert match["verified"] and match["reason"] == "match"
        mismatch = await verify(client, trace_id, expected_hash="ab" * 32)
        assert not mismatch["verified"] and mismatch["reason"] == "mismatch"


async def tamper_and_verify(
    app_factory: Callable[..., FastAPI], backend: Backend, statements: list[tuple[str, tuple[Any, ...]]]
) -> dict[str, Any]:
    async with panel(app_factory, backend) as (client, state):
        await chat(client, state)  # a neighbour that must stay intact
        trace_id = await chat(client, state)
        await chat(client, state)
        for sql, args in statements:
            await backend.execute(sql, *(trace_id if a == "$TRACE" else a for a in args))
        result = await verify(client, trace_id)
        ledger = (await client.get("/v1/trust/ledger/verify")).json()
        result["ledger"] = ledger
        return result


async def test_edited_payload_is_detected(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    result = await tamper_and_verify(
        app_factory,
        backend,
        [
            (
                "UPDATE trace_steps SET step_json = REPLACE(step_json, 'demo', 'evil') WHERE trace_id = $1 AND seq = 2",
                ("$TRACE",),
            )
        ],
    )
    assert not result["verified"] and result["reason"] == "chain_broken" and result["broken_at"] == 2


async def test_edited_column_is_detected(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    result = await tamper_and_verify(
        app_factory,
        backend,
        [("UPDATE trace_steps SET step_type = 'innocent' WHERE trace_id = $1 AND seq = 1", ("$TRACE",))],
    )
    assert not result["verified"] and result["broken_at"] == 1


async def test_deleted_step_is_detected(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    result = await tamper_and_verify(
        app_factory,
        backend,
        [
            ("DELETE FROM trace_steps WHERE trace_id = $1 AND seq = 1", ("$TRACE",)),
        ],
    )
    assert not result["verified"] and result["reason"] == "chain_broken" and result["broken_at"] == 1


async def test_reordered_steps_are_detected(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    result = await tamper_and_verify(
        app_factory,
        backend,
        [
            ("UPDATE trace_steps SET seq = 99 WHERE trace_id = $1 AND seq = 1", ("$TRACE",)),
            ("UPDATE trace_steps SET seq = 1 WHERE trace_id = $1 AND seq = 2", ("$TRACE",)),
            ("UPDATE trace_steps SET seq = 2 WHERE trace_id = $1 AND seq = 99", ("$TRACE",)),
        ],
    )
    assert not result["verified"] and result["reason"] == "chain_broken" and result["broken_at"] == 1


async def test_inserted_step_is_detected(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    # A careful forger: the inserted step is well-formed and links to step 1 ...
    async def forge(backend: Backend, trace_id: str) -> list[tuple[str, tuple[Any, ...]]]:
        [first] = await backend.fetch("SELECT step_hash FROM trace_steps WHERE trace_id = $1 AND seq = 1", trace_id)
        text = json.dumps(
            {
                "created_at": "2026-01-01T00:00:00+00:00",
                "payload": {"approved": True},
                "seq": 2,
                "step_type": "tool_approval",
                "trace_id": trace_id,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return [
            ("UPDATE trace_steps SET seq = seq + 10 WHERE trace_id = $1 AND seq >= 2", (trace_id,)),
            ("UPDATE trace_steps SET seq = seq - 9 WHERE trace_id = $1 AND seq >= 12", (trace_id,)),
            (
                "INSERT INTO trace_steps (trace_id, seq, step_type, step_json, created_at, prev_hash, step_hash)"
                " VALUES ($1, 2, 'tool_approval', $2, '2026-01-01T00:00:00+00:00', $3, $4)",
                (trace_id, text, first["step_hash"], link(first["step_hash"], text)),
            ),
        ]

    async with panel(app_factory, backend) as (client, state):
        trace_id = await chat(client, state)
        for sql, args in await forge(backend, trace_id):
            await backend.execute(sql, *args)
        result = await verify(client, trace_id)
    # ... but the step after it no longer links to it.
    assert not result["verified"] and result["reason"] == "chain_broken" and result["broken_at"] == 3


async def test_truncated_tail_is_detected(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    result = await tamper_and_verify(
        app_factory,
        backend,
        [
            ("DELETE FROM trace_steps WHERE trace_id = $1 AND seq = 2", ("$TRACE",)),
        ],
    )
    assert not result["verified"] and result["reason"] == "chain_broken" and "truncated" in result["detail"]


async def test_truncated_tail_with_forged_head_is_caught_by_the_ledger(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    async with panel(app_factory, backend) as (client, state):
        trace_id = await chat(client, state)
        [first] = await backend.fetch("SELECT step_hash FROM trace_steps WHERE trace_id = $1 AND seq = 1", trace_id)
        await backend.execute("DELETE FROM trace_steps WHERE trace_id = $1 AND seq = 2", trace_id)
        await backend.execute(
            "UPDATE traces SET step_count = 1, head_hash = $1 WHERE id = $2", first["step_hash"], trace_id
        )
        result = await verify(client, trace_id)
    assert not result["verified"] and result["reason"] == "ledger_mismatch"


async def test_deleted_trace_is_detected(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    result = await tamper_and_verify(
        app_factory,
        backend,
        [
            ("DELETE FROM trace_steps WHERE trace_id = $1", ("$TRACE",)),
            ("DELETE FROM traces WHERE id = $1", ("$TRACE",)),
        ],
    )
    assert not result["verified"] and result["reason"] == "trace_deleted"
    assert not result["ledger"]["verified"] and result["ledger"]["reason"] == "trace_deleted"
    assert result["ledger"]["broken_at"] == 2


async def test_untouched_ledger_verifies(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    async with panel(app_factory, backend) as (client, state):
        for _ in range(3):
            await chat(client, state)
        ledger = (await client.get("/v1/trust/ledger/verify")).json()
        assert ledger["verified"] and ledger["entries"] == 3
        partial = (await client.get("/v1/trust/ledger/verify", params={"from": 2, "to": 3})).json()
        assert partial["verified"] and partial["entries"] == 2


async def test_deleted_newest_ledger_entries_are_detected(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    """A chain cannot see its own tail cut off; the traces that recorded those entries can."""
    async with panel(app_factory, backend) as (client, state):
        for _ in range(3):
            await chat(client, state)
        await backend.execute("DELETE FROM trace_ledger WHERE seq >= 2")
        ledger = (await client.get("/v1/trust/ledger/verify")).json()
        earlier = (await client.get("/v1/trust/ledger/verify", params={"to": 1})).json()
        await backend.execute("DELETE FROM trace_ledger")
        emptied = (await client.get("/v1/trust/ledger/verify")).json()
    assert not ledger["verified"] and ledger["reason"] == "ledger_broken" and ledger["broken_at"] == 2, ledger
    assert "entry 3" in ledger["detail"] and ledger["last_seq"] == 1
    assert earlier["verified"] and earlier["entries"] == 1  # what is left of the range asked for is intact
    assert not emptied["verified"] and emptied["reason"] == "ledger_broken" and emptied["broken_at"] == 1


async def test_deleted_newest_ledger_entries_are_detected_after_an_upgrade_from_random_trace_ids(
    app_factory: Callable[..., FastAPI], backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Versions before 6c4b682 gave traces random (version 4) ids, most of which sort after every
    time-ordered id: on a database they wrote, "the newest traces by id" were old ones forever,
    and the newest ledger entries could be deleted unseen."""
    import app.receipts.tracer as tracer_module
    from app.ids import new_time_uuid, new_uuid

    monkeypatch.setattr(trust_module, "RECENT_TRACES_CHECKED", 2)
    async with panel(app_factory, backend) as (client, state):
        monkeypatch.setattr(tracer_module, "new_time_uuid", lambda: "f" + new_uuid()[1:])  # the old version
        for _ in range(3):
            await chat(client, state)
        monkeypatch.setattr(tracer_module, "new_time_uuid", new_time_uuid)  # upgraded
        for _ in range(3):
            await chat(client, state)
        intact = (await client.get("/v1/trust/ledger/verify")).json()
        await backend.execute("DELETE FROM trace_ledger WHERE seq >= 5")
        ledger = (await client.get("/v1/trust/ledger/verify")).json()
    assert intact["verified"] and intact["entries"] == 6, intact
    assert not ledger["verified"] and ledger["reason"] == "ledger_broken" and ledger["broken_at"] == 5, ledger
    assert "entry 6" in ledger["detail"]


async def test_a_trace_whose_start_was_dropped_never_reaches_the_ledger(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    """A stream's start is handed over early. If it is lost (its batch failed to commit, or the
    queue was full), the rest of that trace is dropped too (and counted): finishing it later would
    put in the ledger a trace whose record was never stored, and the ledger would fail for good."""
    async with panel(app_factory, backend) as (client, state):
        tracer = state.tracer
        assert tracer.store is not None
        real_write = tracer.store.write_batch

        async def database_down(*_: Any) -> None:
            raise ConnectionError("database unavailable")

        lost: list[str] = []
        for cause in ("write_failed", "queue_full"):
            trace = tracer.begin(route=CHAT, request_id=cause, principal="owner", stream=True)
            if cause == "write_failed":
                tracer.store.write_batch = database_down  # type: ignore[method-assign]
                trace.flush()
                await tracer.flush()  # three attempts, then the batch is dropped
                tracer.store.write_batch = real_write  # type: ignore[method-assign]
            else:
                queue_max, tracer.queue_max = tracer.queue_max, 0
                trace.flush()
                tracer.queue_max = queue_max
            trace.step("llm_provider", {"provider": "demo"})
            trace.end()
            lost.append(trace.id)
        await chat(client, state)
        ledger = (await client.get("/v1/trust/ledger/verify")).json()
        gone = [await client.get(f"/v1/trust/trace/{trace_id}") for trace_id in lost]
        metrics = (await client.get("/metrics")).text
    assert ledger["verified"] and ledger["entries"] == 1, ledger
    assert [response.status_code for response in gone] == [404, 404]
    assert 'orch_trace_dropped_total{reason="trace_incomplete"} 2.0' in metrics


async def test_ledger_ranges_that_hold_nothing_or_are_malformed(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    async with panel(app_factory, backend) as (client, state):
        for path in ("/v1/trust/ledger", "/v1/trust/ledger/verify"):
            error = assert_envelope(await client.get(path), 404, type_="not_found_error", param="from")
            assert error["code"] == "ledger_range_empty" and "empty" in error["message"]
        await chat(client, state)
        await chat(client, state)
        for path in ("/v1/trust/ledger", "/v1/trust/ledger/verify"):
            beyond = assert_envelope(await client.get(path, params={"from": 3}), 404, param="from")
            assert "ends at entry 2" in beyond["message"]
            backwards = assert_envelope(await client.get(path, params={"from": 2, "to": 1}), 400, param="from")
            assert backwards["code"] == "invalid_range"
            for huge in ("9223372036854775808", "99999999999999999999"):
                assert_envelope(await client.get(path, params={"from": huge}), 400, param="from")
                assert_envelope(await client.get(path, params={"to": huge}), 400, param="to")
        intact = (await client.get("/v1/trust/ledger/verify", params={"from": 2, "to": 9})).json()
    assert intact["verified"] and intact["entries"] == 1 and intact["last_seq"] == 2


async def test_without_from_the_newest_entries_are_verified(
    app_factory: Callable[..., FastAPI], backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger longer than one call's worth (here 2 entries) still verifies without parameters:
    its newest entries, linked onto the one before; an explicit range that long is refused."""
    monkeypatch.setattr(trust_module, "MAX_LEDGER_RANGE", 2)
    async with panel(app_factory, backend) as (client, state):
        for _ in range(3):
            await chat(client, state)
        newest = (await client.get("/v1/trust/ledger/verify")).json()
        exported = (await client.get("/v1/trust/ledger")).json()
        too_long = await client.get("/v1/trust/ledger/verify", params={"from": 1})
    assert newest["verified"] and (newest["first_seq"], newest["last_seq"], newest["entries"]) == (2, 3, 2)
    assert [entry["seq"] for entry in exported["entries"]] == [2, 3]
    assert assert_envelope(too_long, 400, param="to")["code"] == "range_too_large"


async def test_a_streamed_chat_finishes_its_receipt_and_the_ledger_agrees(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    """A stream hands its start over early (flush) and the rest at its end; with a long interval
    both land in one batch, whose trace row must still record the finish the ledger records."""
    async with panel(app_factory, backend, trace_flush_interval_ms=5000) as (client, state):
        async with client.stream("POST", CHAT, json={**HELLO, "stream": True}) as response:
            assert response.status_code == 200
            lines = [line async for line in response.aiter_lines() if line.startswith("data: {")]
        trace_id = json.loads(lines[0][len("data: ") :])["request_id"]
        await chat(client, state)  # a plain neighbour, committed in the same batch
        report = (await client.get(f"/v1/trust/trace/{trace_id}")).json()
        ledger = (await client.get("/v1/trust/ledger/verify")).json()
        bundle = (await client.get(f"/v1/trust/trace/{trace_id}/export")).json()
    assert report["verified"] and report["finished_at"] is not None and report["step_count"] == 2
    assert ledger["verified"] and ledger["reason"] == "intact" and ledger["entries"] == 2, ledger
    assert bundle["trace"]["step_count"] == 2 and bundle["trace"]["head_hash"] == report["head_hash"]
    path = tmp_path / "stream.json"
    path.write_text(json.dumps(bundle))
    assert run_verifier(path).returncode == 0


async def test_a_stream_whose_finish_an_older_version_did_not_record_verifies_in_the_ledger(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    """Versions before 6ad447e wrote a stream's ledger entry but left its trace row unfinished
    (finished_at, step_count and head_hash empty) when its start and end shared a batch, which they
    nearly always did. After an upgrade the ledger must still verify over such traces, by their
    chain, as GET /v1/trust/verify does; an edited step in one is still caught."""
    async with panel(app_factory, backend) as (client, state):
        await chat(client, state)
        async with client.stream("POST", CHAT, json={**HELLO, "stream": True}) as response:
            lines = [line async for line in response.aiter_lines() if line.startswith("data: {")]
        trace_id = json.loads(lines[0][len("data: ") :])["request_id"]
        await chat(client, state)
        await state.tracer.flush()
        # What the older version left behind:
        await backend.execute(
            "UPDATE traces SET finished_at = NULL, step_count = NULL, head_hash = NULL WHERE id = $1", trace_id
        )
        one = await verify(client, trace_id)
        ledger = (await client.get("/v1/trust/ledger/verify")).json()
        await backend.execute(
            "UPDATE trace_steps SET step_json = REPLACE(step_json, 'demo', 'evil') WHERE trace_id = $1 AND seq = 2",
            trace_id,
        )
        edited = (await client.get("/v1/trust/ledger/verify")).json()
    assert one["verified"], one
    assert ledger["verified"] and ledger["reason"] == "intact" and ledger["entries"] == 3, ledger
    assert not edited["verified"] and edited["reason"] == "chain_broken" and edited["broken_at"] == 2, edited
    assert edited["detail"].startswith(f"trace {trace_id}: ")


async def test_unknown_and_malformed_trace_ids(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    async with panel(app_factory, backend) as (client, _):
        unknown = str(uuid.uuid4())
        for path in (f"/v1/trust/verify/{unknown}", f"/v1/trust/trace/{unknown}", f"/v1/trust/trace/{unknown}/export"):
            assert_envelope(await client.get(path), 404, type_="not_found_error")
        error = assert_envelope(await client.get("/v1/trust/verify/not-a-trace"), 400, param="trace_id")
        assert error["code"] == "invalid_trace_id"
        assert_envelope(await client.post("/v1/audit/verify", json={"trace_id": unknown}), 404)


async def test_events_filters_limits_and_bad_input(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    async with panel(app_factory, backend, trust_panel_max_events=4) as (client, state):
        first = await chat(client, state)
        second = await chat(client, state)
        events = (await client.get("/v1/trust/events", params={"limit": 2})).json()
        assert events["count"] == 2 and events["truncated"] is True and events["limit"] == 2
        assert [e["step_type"] for e in events["events"]] == ["llm_provider", "request"]
        assert events["events"][0]["trace_id"] == second  # newest first
        clamped = (await client.get("/v1/trust/events", params={"limit": 1000})).json()
        assert clamped["limit"] == 4 and clamped["count"] == 4 and clamped["truncated"] is False
        only = await client.get("/v1/trust/events", params={"step_type": "request,llm_provider", "trace_id": first})
        assert [e["step_type"] for e in only.json()["events"]] == ["llm_provider", "request"]
        for bad in ({"limit": "abc"}, {"limit": -1}, {"limit": 0}):
            assert_envelope(await client.get("/v1/trust/events", params=bad), 400, param="limit")
        assert_envelope(await client.get("/v1/trust/events", params={"trace_id": "x"}), 400, param="trace_id")


async def test_secrets_and_personal_data_never_reach_the_store(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    secret = "sk-" + "A1b2C3d4" * 4
    async with panel(app_factory, backend, trust_panel_max_value_chars=40) as (client, state):
        trace = state.tracer.begin(route="/test", request_id="r", principal="owner", stream=False)
        trace.step("note", {"api_key": "plain-value", "note": f"mail a@b.co, key {secret}", "long": "z" * 100})
        trace.end()
        await state.tracer.flush()
        [event] = (await client.get("/v1/trust/events", params={"step_type": "note"})).json()["events"]
    assert event["payload"]["api_key"] == "[REDACTED]"
    assert "a@b.co" not in event["payload"]["note"] and secret not in event["payload"]["note"]
    assert len(event["payload"]["long"]) <= 40 and event["payload"]["long"].endswith("[truncated]")
    stored = await backend.fetch("SELECT step_json FROM trace_steps")
    dump = json.dumps(stored)
    assert secret not in dump and "a@b.co" not in dump and "plain-value" not in dump


async def test_receipts_are_scoped_by_principal(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    """Another principal reads only its own receipts (another's trace is the same 404 as an unknown
    one); the owner reads all of them, and only the owner reads the ledger, which lists everyone's."""
    alice = {"Authorization": "Bearer alice-token-0123456789"}
    bob = {"Authorization": "Bearer bob-token-01234567890"}
    principals = "alice=alice-token-0123456789,bob=bob-token-01234567890"
    async with panel(app_factory, backend, principals=principals) as (client, state):
        alices = await chat(client, state, **alice)
        bobs = await chat(client, state, **bob)
        owners = await chat(client, state)
        for path in ("/v1/trust/trace/{}", "/v1/trust/verify/{}", "/v1/trust/trace/{}/export"):
            assert (await client.get(path.format(alices), headers=alice)).status_code == 200
            assert (await client.get(path.format(alices))).status_code == 200  # the owner
            for other in (bobs, owners):
                hidden = assert_envelope(await client.get(path.format(other), headers=alice), 404)
                assert hidden["code"] == "trace_not_found"
        audit = await client.post("/v1/audit/verify", json={"trace_id": bobs}, headers=alice)
        assert assert_envelope(audit, 404)["code"] == "trace_not_found"
        assert (await client.post("/v1/audit/verify", json={"trace_id": bobs}, headers=bob)).json()["valid"]
        mine = (await client.get("/v1/trust/events", params={"limit": 100}, headers=alice)).json()
        everyone = (await client.get("/v1/trust/events", params={"limit": 100})).json()
        filtered = await client.get("/v1/trust/events", params={"trace_id": bobs}, headers=alice)
        for path in ("/v1/trust/ledger", "/v1/trust/ledger/verify"):
            denied = assert_envelope(await client.get(path, headers=bob), 403, type_="permission_error")
            assert denied["code"] == "owner_required"
            assert (await client.get(path)).status_code == 200
    assert {e["trace_id"] for e in mine["events"]} == {alices} and mine["count"] == 2
    assert {e["trace_id"] for e in everyone["events"]} == {alices, bobs, owners}
    assert filtered.status_code == 200 and filtered.json()["events"] == []


async def test_a_database_out_of_reach_is_503_not_500(app_factory: Callable[..., FastAPI], postgres_url: str) -> None:
    """Postgres goes away under the running service (the path to it is cut): the routes that need
    it answer 503 database_unavailable in the envelope, and chat keeps working."""
    async with tcp_proxy("127.0.0.1", 5432) as proxy:
        url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        memory = {"memory_enabled": True, "memory_capture_enabled": True}
        async with panel(app_factory, Backend("postgres", {"database_url": url}, url), **memory) as (client, state):
            trace_id = await chat(client, state)
            await proxy.cut()
            for method, path, body in (
                ("GET", "/v1/trust/events", None),
                ("GET", f"/v1/trust/trace/{trace_id}", None),
                ("GET", "/v1/trust/ledger/verify", None),
                ("POST", "/v1/audit/verify", {"trace_id": trace_id}),
                ("GET", "/v1/memory", None),
            ):
                response = await client.request(method, path, json=body)
                error = assert_envelope(response, 503, type_="service_unavailable")
                assert error["code"] == "database_unavailable", (path, error)
            assert (await client.post(CHAT, json=HELLO)).status_code == 200  # its receipt is dropped, counted
            ready = await client.get("/ready")
    assert ready.status_code == 503


@pytest.mark.parametrize("outage", ["refuses connections", "dropped"])
async def test_a_database_the_server_refuses_is_503_not_500(
    app_factory: Callable[..., FastAPI], postgres_url: str, outage: str
) -> None:
    """The server is up but will not let us in (SQLSTATE 55000 after ALLOW_CONNECTIONS false, or
    3D000 for a dropped database): 503 database_unavailable, as when it cannot be reached."""
    name = postgres_url.rsplit("/", 1)[1]
    memory = {"memory_enabled": True, "memory_capture_enabled": True}
    backend = Backend("postgres", {"database_url": postgres_url}, postgres_url)
    async with panel(app_factory, backend, **memory) as (client, state):
        trace_id = await chat(client, state)
        admin = await asyncpg.connect(postgres_url.replace(f"/{name}", "/test"))
        try:
            if outage == "dropped":
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            else:
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                await admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            for method, path, body in (
                ("GET", "/v1/trust/events", None),
                ("GET", f"/v1/trust/trace/{trace_id}", None),
                ("POST", "/v1/audit/verify", {"trace_id": trace_id}),
                ("GET", "/v1/memory", None),
            ):
                response = await client.request(method, path, json=body)
                error = assert_envelope(response, 503, type_="service_unavailable")
                assert error["code"] == "database_unavailable", (path, error)
            assert (await client.post(CHAT, json=HELLO)).status_code == 200
            assert (await client.get("/ready")).status_code == 503
        finally:
            if outage != "dropped":
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()


async def test_trust_panel_off_is_503_after_auth(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    app = app_factory()
    async with running(app, token=None) as anonymous:
        assert_envelope(await anonymous.get("/v1/trust/events"), 401)
    async with running(app_factory()) as client:
        error = assert_envelope(await client.get("/v1/trust/events"), 503, type_="service_unavailable")
        assert "ORCH_TRUST_PANEL_ENABLED" in error["message"]


async def test_tracing_off_uses_the_request_id_and_stores_nothing(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    app = app_factory(trace_enabled=False, trust_panel_enabled=True, trace_db_path=tmp_path / "off.db")
    async with running(app) as client:
        response = await client.post(CHAT, json=HELLO, headers={"X-Request-ID": "mine-1"})
        assert response.json()["request_id"] == "mine-1"
        assert_envelope(await client.get("/v1/trust/events"), 503)
    assert not (tmp_path / "off.db").exists()


async def test_audit_verify_compares_the_recorded_policy_with_the_files_on_disk(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: []\n")
    async with panel(app_factory, backend) as (client, state):
        state.policies.register("test_policy", policy)
        state.policies.freeze()
        trace_id = await chat(client, state)
        audit = (await client.post("/v1/audit/verify", json={"trace_id": trace_id})).json()
        assert audit["valid"] is True
        assert audit["policy_hash_trace"] == audit["policy_hash_current"] == audit["policy_hash_loaded"]
        assert audit["policy_steps"][0]["step_type"] == "request"
        policy.write_text("rules: [changed]\n")
        drifted = (await client.post("/v1/audit/verify", json={"trace_id": trace_id})).json()
        assert drifted["valid"] is False and drifted["policy_hash_current"] != drifted["policy_hash_trace"]
        assert_envelope(await client.post("/v1/audit/verify", json={}), 400, param="trace_id")
        assert_envelope(await client.post("/v1/audit/verify", content=b"nope"), 400)


async def test_audit_verify_never_vouches_for_a_broken_receipt(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    """The policy hash is read from the stored rows: if they fail verification, it proves nothing."""
    async with panel(app_factory, backend) as (client, state):
        trace_id = await chat(client, state)
        audit = (await client.post("/v1/audit/verify", json={"trace_id": trace_id})).json()
        assert audit["valid"] is True and audit["receipt"] == {
            "verified": True,
            "reason": "intact",
            "broken_at": None,
            "detail": None,
        }
        await backend.execute(
            "UPDATE trace_steps SET step_json = REPLACE(step_json, '\"owner\"', '\"mallory\"') WHERE trace_id = $1",
            trace_id,
        )
        tampered = (await client.post("/v1/audit/verify", json={"trace_id": trace_id})).json()
    assert tampered["policy_hash_trace"] == tampered["policy_hash_current"]  # the hash alone still matches
    assert tampered["valid"] is False
    assert tampered["receipt"]["reason"] == "chain_broken" and tampered["receipt"]["broken_at"] == 1


def run_verifier(bundle: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # The system interpreter, not the project's virtualenv: the check needs only the stdlib.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    return subprocess.run(
        [python, str(ROOT / "scripts/verify_receipts.py"), str(bundle), *extra],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


async def test_exported_bundles_verify_offline(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    async with panel(app_factory, backend) as (client, state):
        trace_id = await chat(client, state)
        await chat(client, state)
        bundle = (await client.get(f"/v1/trust/trace/{trace_id}/export")).json()
        ledger = (await client.get("/v1/trust/ledger")).json()
    assert bundle["format"] == "orchestrators.receipt.v2" and len(bundle["steps"]) == 2
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    good = run_verifier(path)
    assert good.returncode == 0 and "VERIFIED" in good.stdout, good.stdout + good.stderr
    head = bundle["trace"]["head_hash"]
    assert run_verifier(path, "--expected-head", head).returncode == 0
    assert run_verifier(path, "--expected-head", "0" * 64).returncode == 1
    forged = json.loads(path.read_text())
    forged["steps"][1]["step_json"] = forged["steps"][1]["step_json"].replace("demo", "evil")
    path.write_text(json.dumps(forged))
    bad = run_verifier(path)
    assert bad.returncode == 1 and "NOT VERIFIED" in bad.stdout and "at 2" in bad.stdout
    ledger_path = tmp_path / "ledger.json"
    ledger_path.write_text(json.dumps(ledger))
    assert len(ledger["entries"]) == 2 and run_verifier(ledger_path).returncode == 0
    ledger["entries"][0]["head_hash"] = "f" * 64
    ledger_path.write_text(json.dumps(ledger))
    assert run_verifier(ledger_path).returncode == 1
    for junk in ("{", "[]", '"text"', "null"):
        (tmp_path / "junk.json").write_text(junk)
        unreadable = run_verifier(tmp_path / "junk.json")
        assert unreadable.returncode == 2 and "unreadable bundle" in unreadable.stderr, junk
    ledger["entries"] = []
    ledger_path.write_text(json.dumps(ledger))
    empty = run_verifier(ledger_path)
    assert empty.returncode == 1 and "empty" in empty.stdout


async def test_offline_check_covers_what_a_reader_sees(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    """The bundle's metadata must be its hashed request step; a trace the ledger lists is checked
    against its entry even when the bundle's own record of the finish is erased."""
    async with panel(app_factory, backend) as (client, state):
        trace_id = await chat(client, state)
        bundle = (await client.get(f"/v1/trust/trace/{trace_id}/export")).json()
    path = tmp_path / "bundle.json"
    forged = json.loads(json.dumps(bundle))
    forged["trace"]["metadata"]["principal"] = "mallory"
    path.write_text(json.dumps(forged))
    edited = run_verifier(path)
    assert edited.returncode == 1 and "metadata_mismatch" in edited.stdout, edited.stdout
    cut = json.loads(json.dumps(bundle))
    cut["steps"] = cut["steps"][:1]
    cut["trace"].update(finished_at=None, step_count=None, head_hash=None)
    path.write_text(json.dumps(cut))
    truncated = run_verifier(path)
    assert truncated.returncode == 1 and "ledger_mismatch" in truncated.stdout, truncated.stdout


async def test_a_failing_store_never_fails_the_request(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    app = app_factory(trace_db_path=tmp_path / "t.db")
    async with running(app) as client:
        state: AppState = app.state.orch
        await state.databases.close()  # the database goes away under the running service
        response = await client.post(CHAT, json=HELLO)
        assert response.status_code == 200
        await state.tracer.flush()
        metrics = (await client.get("/metrics")).text
    assert "orch_trace_write_errors_total 3.0" in metrics


async def test_migrations_are_safe_to_run_twice(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    async with panel(app_factory, backend) as (client, state):
        trace_id = await chat(client, state)
    async with panel(app_factory, backend) as (client, _):  # a restart on the same database
        assert (await verify(client, trace_id))["verified"]
    # (other stores, e.g. tool approvals, share the Postgres database and its migrations table)
    rows = await backend.fetch(
        "SELECT component, version FROM schema_migrations WHERE component = 'traces' ORDER BY version"
    )
    assert rows == [{"component": "traces", "version": version} for version in (1, 2, 3, 4)]


async def test_ready_is_503_while_receipts_cannot_be_committed(app_factory: Callable[..., FastAPI]) -> None:
    """The database answers its ping (a read-only file, a full disk) but takes no receipt."""
    app = app_factory()
    async with running(app) as client:
        state: AppState = app.state.orch
        store = state.tracer.store
        assert store is not None
        working = store.write_batch

        async def refuse(*args: Any) -> None:
            raise OSError(30, "Read-only file system")

        store.write_batch = refuse  # type: ignore[method-assign]
        assert (await client.post(CHAT, json=HELLO)).status_code == 200
        for _ in range(200):
            if state.tracer.writes_failing:
                break
            await asyncio.sleep(0.01)
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["reason"] == "receipt_writes_failing"
        store.write_batch = working  # type: ignore[method-assign]
        await state.tracer.flush()
        assert not state.tracer.writes_failing
