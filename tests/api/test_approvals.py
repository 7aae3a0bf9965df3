"""Approvals over HTTP, on SQLite and on the real Postgres server: separation of duties, the
single-use token bound to tool + arguments, expiry, the pending -> approved -> consumed lifecycle,
atomic consumption under concurrency (one app and two replicas), and surviving a restart.

safe_calc is made to need approval by a test policy, so none of this needs Docker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.lifespan import AppState
from app.settings import ConfigError, load_settings
from app.tools.approvals import approval_ref
from tests.api.tools_support import (
    APPROVAL_POLICY,
    APPROVE,
    APPROVER,
    APPROVER_HEADERS,
    EXECUTE,
    approve,
    execute,
    write_policy,
)
from tests.conftest import Backend, assert_envelope, running

CALC = {"expression": "6*7"}
APPROVALS = "/v1/tools/approvals"


@asynccontextmanager
async def tools_app(
    app_factory: Callable[..., FastAPI], tmp_path: Path, backend: Backend | None = None, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    values: dict[str, Any] = {
        "approver_token": APPROVER,
        "tool_policy_path": write_policy(tmp_path, APPROVAL_POLICY),
        "trust_panel_enabled": True,
    }
    if backend is not None:
        values.update(backend.settings)
    values.update(settings)
    app = app_factory(**values)
    async with running(app) as client:
        yield client, app.state.orch


# --- separation of duties ------------------------------------------------------------------


async def test_only_the_approver_may_approve(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    async with tools_app(app_factory, tmp_path) as (client, _):
        for method, path in (
            ("POST", APPROVE),
            ("GET", APPROVALS),
            ("GET", f"{APPROVALS}/apr_x"),
            ("POST", f"{APPROVALS}/apr_x/approve"),
            ("POST", f"{APPROVALS}/apr_x/deny"),
        ):
            body = {"name": "safe_calc", "args": CALC} if path == APPROVE else None
            error = assert_envelope(await client.request(method, path, json=body), 403, type_="permission_error")
            assert error["code"] == "approver_required"
            assert_envelope(
                await client.request(method, path, json=body, headers={"Authorization": "Bearer wrong"}), 401
            )
        approval = await approve(client, "safe_calc", CALC)
        assert approval["status"] == "approved"


async def test_without_an_approver_token_approvals_are_refused_naming_the_flag(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    async with tools_app(app_factory, tmp_path, approver_token="") as (client, _):
        error = assert_envelope(await client.post(APPROVE, json={"name": "safe_calc", "args": CALC}), 403)
        assert error["code"] == "approver_not_configured" and "ORCH_APPROVER_TOKEN" in error["message"]
        # the tool itself still says it needs approval
        result = await execute(client, "safe_calc", CALC)
        assert result["error"] == "approval_required" and result["approval_reason"] == "missing_approval"


async def test_approvals_with_auth_off_still_need_the_approver(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    async with tools_app(app_factory, tmp_path, require_bearer=False) as (client, _):
        anonymous = await client.post(APPROVE, json={"name": "safe_calc", "args": CALC}, headers={"Authorization": ""})
        assert assert_envelope(anonymous, 403)["code"] == "approver_required"
        assert (await approve(client, "safe_calc", CALC))["status"] == "approved"


@pytest.mark.parametrize(
    "settings",
    [
        {"bearer_token": "same-token-0123456789", "approver_token": "same-token-0123456789"},
        {"principals": "alice=alice-token-0123456789", "approver_token": "alice-token-0123456789"},
        {
            "env": "production",
            "bearer_token": "a" * 32,
            "rate_limit_storage_url": "memory://",
            "approver_token": "tiny-tok",
        },
    ],
)
def test_the_service_refuses_to_start_with_a_shared_or_weak_approver_token(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(_env_file=None, **settings)
    assert "ORCH_APPROVER_TOKEN" in str(error.value)
    for secret in ("same-token", "alice-token", "tiny-tok"):
        assert secret not in str(error.value)  # secrets are never echoed


# --- issuing -------------------------------------------------------------------------------


async def test_approve_returns_the_original_fields(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    async with tools_app(app_factory, tmp_path, tool_approval_ttl_sec=120) as (client, _):
        approval = await approve(client, "safe_calc", CALC)
        assert set(approval) == {"approval_id", "tool", "args_hash", "created_at", "expires_at", "status"}
        assert approval["tool"] == "safe_calc" and approval["status"] == "approved"
        assert approval["approval_id"].startswith("apr_") and len(approval["approval_id"]) >= 32
        created = datetime.fromisoformat(approval["created_at"])
        expires = datetime.fromisoformat(approval["expires_at"])
        assert 119 <= (expires - created).total_seconds() <= 121
        custom = await approve(client, "safe_calc", CALC, ttl_seconds=30)
        lifetime = datetime.fromisoformat(custom["expires_at"]) - datetime.fromisoformat(custom["created_at"])
        assert 29 <= lifetime.total_seconds() <= 31
        assert custom["approval_id"] != approval["approval_id"]


@pytest.mark.parametrize("ttl", ["60", -5, 0, 10**9, 1.5, True, None, [], {}])
async def test_invalid_ttl_is_a_400(app_factory: Callable[..., FastAPI], tmp_path: Path, ttl: Any) -> None:
    async with tools_app(app_factory, tmp_path) as (client, state):
        body = {"name": "safe_calc", "args": CALC, "ttl_seconds": ttl}
        response = await client.post(APPROVE, json=body, headers=APPROVER_HEADERS)
        if ttl is None:
            assert response.status_code == 200  # null: the default TTL
            return
        error = assert_envelope(response, 400, type_="invalid_request_error", param="ttl_seconds")
        assert error["code"] == "validation_error"
        assert await state.tools.approvals.list("all", 10) == []  # nothing was stored


async def test_approving_an_unknown_tool_or_invalid_args_is_refused(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    async with tools_app(app_factory, tmp_path) as (client, state):
        response = await client.post(APPROVE, json={"name": "nope", "args": {}}, headers=APPROVER_HEADERS)
        assert assert_envelope(response, 404)["code"] == "unknown_tool:nope"
        response = await client.post(APPROVE, json={"name": "safe_calc", "args": {"x": 1}}, headers=APPROVER_HEADERS)
        assert assert_envelope(response, 400)["code"] == "validation_error"
        response = await client.post(APPROVE, json={"args": {}}, headers=APPROVER_HEADERS)
        assert assert_envelope(response, 400, param="name")["code"] == "validation_error"
        assert await state.tools.approvals.list("all", 10) == []


# --- consuming -----------------------------------------------------------------------------


async def test_single_use_bound_to_tool_and_arguments(
    app_factory: Callable[..., FastAPI], tmp_path: Path, backend: Backend
) -> None:
    async with tools_app(app_factory, tmp_path, backend) as (client, state):
        missing = await execute(client, "safe_calc", CALC)
        assert missing["error"] == "approval_required" and missing["approval_reason"] == "missing_approval"
        token = (await approve(client, "safe_calc", CALC))["approval_id"]
        other_args = await execute(client, "safe_calc", {"expression": "6*8"}, approval_token=token)
        assert other_args["approval_reason"] == "args_hash_mismatch"
        other_tool = await execute(client, "text_stats", {"text": "x"}, approval_token=token)
        assert other_tool["status"] == "ok"  # text_stats needs no approval: the token is not even looked at
        unknown = await execute(client, "safe_calc", CALC, approval_token="apr_doesnotexist")
        assert unknown["approval_reason"] == "unknown_approval"
        first = await execute(client, "safe_calc", CALC, approval_token=token)
        assert first["status"] == "ok" and first["result"] == 42
        again = await execute(client, "safe_calc", CALC, approval_token=token)
        assert again["error"] == "approval_required" and again["approval_reason"] == "already_consumed"
        # receipts: the refused token is named by a hash, the consumed one by its id
        await state.tracer.flush()
        steps = (await client.get(f"/v1/trust/trace/{first['trace_id']}")).json()["steps"]
        assert [s["step_type"] for s in steps] == ["request", "policy_snapshot", "tool_approval", "tool_result"]
        assert steps[1]["payload"]["decision"] == "require_approval"
        assert steps[2]["payload"]["approved"] is True and steps[2]["payload"]["approval_id"] == token
        refused = (await client.get(f"/v1/trust/trace/{other_args['trace_id']}")).json()["steps"]
        approval_step = next(s["payload"] for s in refused if s["step_type"] == "tool_approval")
        assert approval_step["approval_id"] is None and approval_step["reason"] == "args_hash_mismatch"
        # the token works only as long as it lives
        short = (await approve(client, "safe_calc", CALC, ttl_seconds=1))["approval_id"]
        await asyncio.sleep(1.1)
        expired = await execute(client, "safe_calc", CALC, approval_token=short)
        assert expired["approval_reason"] == "expired"
        listed = (await client.get(APPROVALS, params={"status": "expired"}, headers=APPROVER_HEADERS)).json()
        assert [item["approval_id"] for item in listed["data"]] == [short]


async def test_a_tool_name_mismatch(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    policy = APPROVAL_POLICY + "  - id: stats_need_approval\n    tools: [text_stats]\n    action: require_approval\n"
    async with tools_app(app_factory, tmp_path, tool_policy_path=write_policy(tmp_path, policy, "p2.yaml")) as (
        client,
        _,
    ):
        token = (await approve(client, "safe_calc", {"expression": "1"}))["approval_id"]
        result = await execute(client, "text_stats", {"text": "x"}, approval_token=token)
        assert result["approval_reason"] == "tool_mismatch"
        assert (await execute(client, "safe_calc", {"expression": "1"}, approval_token=token))["status"] == "ok"


async def test_fifty_concurrent_executions_with_one_token_run_exactly_once(
    app_factory: Callable[..., FastAPI], tmp_path: Path, backend: Backend
) -> None:
    async with tools_app(app_factory, tmp_path, backend) as (client, state):
        token = (await approve(client, "safe_calc", CALC))["approval_id"]
        body = {"name": "safe_calc", "args": CALC, "approval_token": token}
        responses = await asyncio.gather(*(client.post(EXECUTE, json=body) for _ in range(50)))
        results = [r.json()["result"] for r in responses]
        assert all(r.status_code == 200 for r in responses)
        assert sum(r["status"] == "ok" for r in results) == 1
        refused = [r for r in results if r["status"] != "ok"]
        assert len(refused) == 49 and {r["approval_reason"] for r in refused} == {"already_consumed"}
        row = await state.tools.approvals.get(token)
        assert row is not None and row.status == "consumed"


async def test_two_replicas_on_one_database_consume_a_token_once(
    app_factory: Callable[..., FastAPI], tmp_path: Path, backend: Backend
) -> None:
    """Two apps (two connection pools / SQLite connections) racing on the same row."""
    async with (
        tools_app(app_factory, tmp_path, backend) as (first, _),
        tools_app(app_factory, tmp_path, backend) as (second, _),
    ):
        token = (await approve(first, "safe_calc", CALC))["approval_id"]
        body = {"name": "safe_calc", "args": CALC, "approval_token": token}
        responses = await asyncio.gather(*(client.post(EXECUTE, json=body) for client in [first, second] * 25))
        statuses = [r.json()["result"]["status"] for r in responses]
        assert statuses.count("ok") == 1 and statuses.count("error") == 49


async def test_approvals_survive_a_restart(
    app_factory: Callable[..., FastAPI], tmp_path: Path, backend: Backend
) -> None:
    async with tools_app(app_factory, tmp_path, backend) as (client, _):
        token = (await approve(client, "safe_calc", CALC))["approval_id"]
        pending = (await execute(client, "safe_calc", {"expression": "1+1"}))["approval_id"]
    async with tools_app(app_factory, tmp_path, backend) as (client, _):
        assert (await execute(client, "safe_calc", CALC, approval_token=token))["status"] == "ok"
        listed = (await client.get(APPROVALS, headers=APPROVER_HEADERS)).json()
        assert [item["approval_id"] for item in listed["data"]] == [pending]


# --- the pending lifecycle -----------------------------------------------------------------


async def test_pending_request_approved_then_used_once(
    app_factory: Callable[..., FastAPI], tmp_path: Path, backend: Backend
) -> None:
    async with tools_app(app_factory, tmp_path, backend, principals="alice=alice-token-0123456789") as (client, state):
        first = await execute(client, "safe_calc", CALC)
        assert first["approval_reason"] == "missing_approval" and first["approval_status"] == "pending"
        approval_id = first["approval_id"]
        # asking again for the same call does not queue a second request
        assert (await execute(client, "safe_calc", CALC))["approval_id"] == approval_id
        # the person sees what is waiting, with the arguments to review
        listed = (await client.get(APPROVALS, params={"status": "pending"}, headers=APPROVER_HEADERS)).json()
        assert listed["count"] == 1 and listed["status"] == "pending"
        item = listed["data"][0]
        assert item["approval_id"] == approval_id and item["tool"] == "safe_calc" and item["args"] == CALC
        assert item["requested_by"] == "owner" and item["status"] == "pending"
        # until a person approves, presenting the id does not work
        early = await execute(client, "safe_calc", CALC, approval_token=approval_id)
        assert early["approval_reason"] == "approval_pending"
        approved = await client.post(f"{APPROVALS}/{approval_id}/approve", headers=APPROVER_HEADERS)
        assert approved.status_code == 200 and approved.json()["status"] == "approved"
        assert approved.json()["decided_by"] == "approver"
        # another caller can not use it, even with the id
        alice = {"Authorization": "Bearer alice-token-0123456789"}
        response = await client.post(
            EXECUTE, json={"name": "safe_calc", "args": CALC, "approval_token": approval_id}, headers=alice
        )
        assert response.json()["result"]["approval_reason"] == "principal_mismatch"
        # the caller who asked: the same call now runs, without presenting anything (as from chat)
        ran = await execute(client, "safe_calc", CALC)
        assert ran["status"] == "ok" and ran["result"] == 42
        after = await execute(client, "safe_calc", CALC)  # used: a new request is raised
        assert after["approval_reason"] == "missing_approval" and after["approval_id"] != approval_id
        consumed = (await client.get(APPROVALS, params={"status": "consumed"}, headers=APPROVER_HEADERS)).json()
        assert [i["approval_id"] for i in consumed["data"]] == [approval_id]
        assert consumed["data"][0]["consumed_by"] == "owner"
        # approving twice is a conflict, an unknown id a 404
        again = await client.post(f"{APPROVALS}/{approval_id}/approve", headers=APPROVER_HEADERS)
        assert assert_envelope(again, 409)["code"] == "approval_not_pending"
        missing = await client.post(f"{APPROVALS}/apr_nope/approve", headers=APPROVER_HEADERS)
        assert assert_envelope(missing, 404)["code"] == "unknown_approval"
        await state.tracer.flush()


async def test_deny(app_factory: Callable[..., FastAPI], tmp_path: Path, backend: Backend) -> None:
    async with tools_app(app_factory, tmp_path, backend) as (client, _):
        pending = (await execute(client, "safe_calc", CALC))["approval_id"]
        response = await client.post(
            f"{APPROVALS}/{pending}/deny", json={"reason": "not today"}, headers=APPROVER_HEADERS
        )
        assert response.status_code == 200
        assert response.json()["status"] == "denied" and response.json()["decision_reason"] == "not today"
        assert (await execute(client, "safe_calc", CALC, approval_token=pending))["approval_reason"] == (
            "approval_denied"
        )
        # a directly issued token can be revoked before use
        token = (await approve(client, "safe_calc", CALC))["approval_id"]
        assert (await client.post(f"{APPROVALS}/{token}/deny", headers=APPROVER_HEADERS)).status_code == 200
        assert (await execute(client, "safe_calc", CALC, approval_token=token))["approval_reason"] == (
            "approval_denied"
        )
        again = await client.post(f"{APPROVALS}/{token}/deny", headers=APPROVER_HEADERS)
        assert assert_envelope(again, 409)["code"] == "approval_not_pending"
        denied = (await client.get(APPROVALS, params={"status": "denied"}, headers=APPROVER_HEADERS)).json()
        assert {i["approval_id"] for i in denied["data"]} == {pending, token}
        bad = await client.get(APPROVALS, params={"status": "maybe"}, headers=APPROVER_HEADERS)
        assert_envelope(bad, 400, param="status")
        bad = await client.post(f"{APPROVALS}/{token}/deny", json={"reason": 5}, headers=APPROVER_HEADERS)
        assert_envelope(bad, 400, param="reason")


async def test_pending_requests_are_bounded_per_caller(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    from app.tools.approvals import MAX_PENDING_PER_PRINCIPAL

    async with tools_app(app_factory, tmp_path) as (client, _):
        for n in range(MAX_PENDING_PER_PRINCIPAL):
            assert (await execute(client, "safe_calc", {"expression": str(n)}))["approval_status"] == "pending"
        over = await execute(client, "safe_calc", {"expression": "999999"})
        assert over["approval_reason"] == "too_many_pending" and "approval_id" not in over


async def test_concurrent_requests_share_one_pending_request_and_respect_the_cap(
    app_factory: Callable[..., FastAPI], tmp_path: Path, backend: Backend
) -> None:
    """Check-then-insert is atomic: the same call asked 20 times at once opens one request, and
    asking for more distinct calls at once than the cap allows stops exactly at the cap."""
    from app.tools.approvals import MAX_PENDING_PER_PRINCIPAL

    async with tools_app(app_factory, tmp_path, backend) as (client, _):
        same = await asyncio.gather(*(execute(client, "safe_calc", CALC) for _ in range(20)))
        assert len({result["approval_id"] for result in same}) == 1
        distinct = await asyncio.gather(
            *(execute(client, "safe_calc", {"expression": str(n)}) for n in range(MAX_PENDING_PER_PRINCIPAL + 10))
        )
        listed = await client.get(APPROVALS, params={"status": "pending", "limit": 200}, headers=APPROVER_HEADERS)
    reasons = [result["approval_reason"] for result in distinct]
    assert reasons.count("too_many_pending") == 11  # the 20 identical calls hold one of the places
    assert listed.json()["count"] == MAX_PENDING_PER_PRINCIPAL


async def test_a_person_approves_exactly_what_runs(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    """Arguments that cannot be shown whole are never put to a person: redacting text between two
    private-key markers would hide code from them while the approval binds the real code."""
    hidden = (
        'a = """-----BEGIN RSA PRIVATE KEY-----"""\n'
        'print("not what the approver saw")\n'
        'b = """-----END RSA PRIVATE KEY-----"""'
    )
    async with tools_app(app_factory, tmp_path) as (client, _):
        refused = await execute(client, "python_exec", {"code": hidden})
        assert refused["approval_reason"] == "arguments_not_reviewable" and "credential" in refused["detail"]
        quoted = 's = """' + '\\"' * 9000 + '"""'  # 20,000 characters of code, longer than that as JSON
        pending = await execute(client, "python_exec", {"code": quoted})
        listed = (await client.get(APPROVALS, params={"status": "pending"}, headers=APPROVER_HEADERS)).json()
        # an approver's own call, with arguments too long to preview, still lists
        issued = await approve(client, "python_exec", {"code": "x = '" + '"' * 12000 + "'"})
        everything = await client.get(APPROVALS, params={"status": "all"}, headers=APPROVER_HEADERS)
    assert pending["approval_status"] == "pending"
    assert [item["args"] for item in listed["data"]] == [{"code": quoted}]  # whole, exactly what would run
    assert everything.status_code == 200 and issued["approval_id"] in everything.text


async def test_approval_enforcement_off_runs_without_approval(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    async with tools_app(app_factory, tmp_path, tool_approval_enforce=False) as (client, _):
        assert (await execute(client, "safe_calc", CALC))["result"] == 42


async def test_approval_decisions_leave_receipts(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    async with tools_app(app_factory, tmp_path) as (client, state):
        approval = await approve(client, "safe_calc", CALC)
        await state.tracer.flush()
        events = (await client.get("/v1/trust/events", params={"step_type": "tool_approval_decision"})).json()["events"]
    assert len(events) == 1
    payload = events[0]["payload"]
    assert payload["tool"] == "safe_calc" and payload["status"] == "approved"
    assert payload["args_hash"] == approval["args_hash"]
    # receipts are readable by callers: a live bearer token is named by a hash, never by its value
    assert payload["approval_id"] is None and payload["approval_ref"] == approval_ref(approval["approval_id"])
    assert approval["approval_id"] not in str(events)


async def test_a_request_left_pending_by_an_older_version_with_hidden_arguments_cannot_be_approved(
    app_factory: Callable[..., FastAPI], tmp_path: Path, backend: Backend
) -> None:
    """Versions before 9030ad7 stored a caller's request with its arguments redacted for review
    (text between two private-key markers became ``[REDACTED]``) while the approval bound the real
    arguments. Such a request, still pending when the current version starts, must not be
    approvable: the person would approve code they were never shown."""
    import hashlib
    import time

    import orjson

    from app.scrub import scrub

    hidden = {"code": "import os\n# -----BEGIN RSA PRIVATE KEY-----\nos.remove('x')\n# -----END RSA PRIVATE KEY-----\n"}
    shown_then = orjson.dumps(scrub(hidden, pii=False), option=orjson.OPT_SORT_KEYS).decode()  # as 1b9af4d stored it
    assert "os.remove" not in shown_then
    plain = {"code": "print(1)"}
    async with tools_app(app_factory, tmp_path, backend) as (client, state):
        now = time.time()
        for approval_id, args, stored in (("apr_oldhidden", hidden, shown_then), ("apr_oldplain", plain, None)):
            text = orjson.dumps(args, option=orjson.OPT_SORT_KEYS)
            async with state.tools.approvals.db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO tool_approvals (approval_id, tool_name, args_hash, args_json, status, created_at,"
                    " expires_at, requested_by) VALUES ($1, $2, $3, $4, 'pending', $5, $6, 'owner')",
                    approval_id,
                    "python_exec",
                    hashlib.sha256(text).hexdigest(),
                    stored if stored is not None else text.decode(),
                    now,
                    now + 900,
                )
        refused = await client.post(f"{APPROVALS}/apr_oldhidden/approve", headers=APPROVER_HEADERS)
        error = assert_envelope(refused, 409, param="approval_id")
        still = (await client.get(f"{APPROVALS}/apr_oldhidden", headers=APPROVER_HEADERS)).json()
        denied = await client.post(f"{APPROVALS}/apr_oldhidden/deny", headers=APPROVER_HEADERS)
        plain_ok = await client.post(f"{APPROVALS}/apr_oldplain/approve", headers=APPROVER_HEADERS)
    assert error["code"] == "arguments_not_reviewable", error
    assert still["status"] == "pending"
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    assert plain_ok.status_code == 200 and plain_ok.json()["status"] == "approved"  # shown exactly: still approvable
