"""The receipt log's Merkle tree on SQLite and on the real Postgres server: the tree the writer
grows batch by batch, the tree head, inclusion and consistency proofs checked by the RFC 9162
verifier written in tests/unit/test_merkle.py (not the service's code), an upgrade from a
database without the tree, and every bad input with its status and envelope."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.lifespan import AppState
from app.tracing.chain import ledger_canonical
from tests.api.test_receipts import CHAT, HELLO, chat, panel
from tests.conftest import Backend, assert_envelope
from tests.unit.test_merkle import Rfc, rfc_verify_consistency, rfc_verify_inclusion

TRACES = 70  # crosses four 16-leaf chunks and several levels of stored nodes


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


async def fill(client: httpx.AsyncClient, state: AppState, count: int, seed: int = 7) -> list[str]:
    """``count`` chats, flushed at random points so that the writer's batches vary in size."""
    rng = random.Random(seed)
    ids = []
    for _ in range(count):
        response = await client.post(CHAT, json=HELLO)
        assert response.status_code == 200
        ids.append(response.json()["request_id"])
        if rng.random() < 0.3:
            await state.tracer.flush()
    await state.tracer.flush()
    return ids


async def ledger_entries(backend: Backend) -> list[bytes]:
    """The ledger's entries as a third party reconstructs them from an export."""
    rows = await backend.fetch("SELECT * FROM trace_ledger ORDER BY seq")
    return [
        ledger_canonical(r["seq"], r["trace_id"], r["head_hash"], r["step_count"], r["created_at"]).encode()
        for r in rows
    ]


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_every_proof_verifies_with_an_independent_rfc_verifier(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    async with panel(app_factory, backend) as (client, state):
        ids = await fill(client, state, TRACES)
        rfc = Rfc(await ledger_entries(backend))
        head = await get(client, "/v1/trust/tree")
        assert head["tree_size"] == TRACES and unb64(head["root_hash"]) == rfc.mth(0, TRACES)
        for size in (1, 15, 16, 17, 33, 64, TRACES):
            for position in {0, size // 2, size - 1}:
                proof = await get(client, "/v1/trust/proof/inclusion", trace_id=ids[position], tree_size=size)
                assert proof["leaf_index"] == position and proof["tree_size"] == size
                leaf = unb64(proof["leaf_hash"])
                assert leaf == rfc.mth(position, position + 1)  # the leaf is the entry's RFC leaf hash
                assert proof["entry"].encode() == rfc.d[position]
                path = [unb64(p) for p in proof["audit_path"]]
                assert rfc_verify_inclusion(position, size, leaf, path, rfc.mth(0, size))
        for first, second in ((1, TRACES), (16, 64), (17, 70), (31, 33), (64, 64), (5, 6)):
            proof = await get(client, "/v1/trust/proof/consistency", **{"from": first, "to": second})
            assert unb64(proof["first_root"]) == rfc.mth(0, first)
            assert unb64(proof["second_root"]) == rfc.mth(0, second)
            path = [unb64(p) for p in proof["proof"]]
            assert rfc_verify_consistency(first, second, rfc.mth(0, first), rfc.mth(0, second), path)
        latest = await get(client, "/v1/trust/proof/inclusion", trace_id=ids[3])
        assert latest["tree_size"] == TRACES and unb64(latest["root_hash"]) == rfc.mth(0, TRACES)
        # Nodes are stored for complete 16-leaf subtrees and up only: about one row per 8 entries.
        nodes = await backend.fetch("SELECT level, idx FROM trace_tree ORDER BY level, idx")
    assert [(n["level"], n["idx"]) for n in nodes] == [(4, 0), (4, 1), (4, 2), (4, 3), (5, 0), (5, 1), (6, 0)]


async def test_a_ledger_without_a_tree_gets_one_at_startup(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    async with panel(app_factory, backend) as (client, state):
        ids = await fill(client, state, 40)
        before = await get(client, "/v1/trust/tree")
    # A database as a version without the tree left it: no table, no migration 2.
    await backend.execute("DROP TABLE trace_tree")
    await backend.execute("DELETE FROM schema_migrations WHERE component = 'traces' AND version = 2")
    async with panel(app_factory, backend) as (client, state):
        assert await get(client, "/v1/trust/tree") == before
        ids += await fill(client, state, 30)
        rfc = Rfc(await ledger_entries(backend))
        proof = await get(client, "/v1/trust/proof/inclusion", trace_id=ids[20])
        path = [unb64(p) for p in proof["audit_path"]]
        assert rfc_verify_inclusion(20, 70, rfc.mth(20, 21), path, rfc.mth(0, 70))


async def test_an_edited_ledger_entry_no_longer_proves_against_an_earlier_root(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    async with panel(app_factory, backend) as (client, state):
        ids = await fill(client, state, 40)
        trusted = unb64((await get(client, "/v1/trust/tree"))["root_hash"])
        await backend.execute("UPDATE trace_ledger SET step_count = 9 WHERE seq = 5")
        proof = await get(client, "/v1/trust/proof/inclusion", trace_id=ids[4], tree_size=40)
        path = [unb64(p) for p in proof["audit_path"]]
        assert not rfc_verify_inclusion(4, 40, unb64(proof["leaf_hash"]), path, trusted)
        # A deleted entry under the stored level: the proof cannot be made, and says why.
        await backend.execute("DELETE FROM trace_ledger WHERE seq = 34")
        refused = await client.get("/v1/trust/proof/inclusion", params={"trace_id": ids[35], "tree_size": 40})
        error = assert_envelope(refused, 409)
        assert error["code"] == "tree_incomplete" and "ledger" in error["message"]


async def test_bad_proof_requests(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    alice = {"Authorization": "Bearer alice-token-0123456789"}
    async with panel(app_factory, backend, principals="alice=alice-token-0123456789") as (client, state):
        empty = await get(client, "/v1/trust/tree")
        assert empty["tree_size"] == 0 and unb64(empty["root_hash"]) == Rfc([]).mth(0, 0)
        ids = await fill(client, state, 3)
        alices = await chat(client, state, **alice)
        cases = [
            ({"trace_id": ids[0], "tree_size": 99}, 400, "tree_size", "invalid_tree_size"),
            ({"trace_id": ids[2], "tree_size": 2}, 400, "tree_size", "invalid_tree_size"),
            ({"trace_id": ids[0], "tree_size": 0}, 400, "tree_size", None),
            ({"trace_id": "not-a-uuid"}, 400, "trace_id", "invalid_trace_id"),
            ({"trace_id": "00000000-0000-4000-8000-000000000000"}, 404, "trace_id", "trace_not_found"),
            ({}, 400, "trace_id", None),
        ]
        for params, status, param, code in cases:
            error = assert_envelope(await client.get("/v1/trust/proof/inclusion", params=params), status, param=param)
            assert code is None or error["code"] == code, (params, error)
        # Another principal's trace is the same 404 as an unknown one; its own is proved.
        hidden = await client.get("/v1/trust/proof/inclusion", params={"trace_id": ids[0]}, headers=alice)
        assert assert_envelope(hidden, 404)["code"] == "trace_not_found"
        own = await client.get("/v1/trust/proof/inclusion", params={"trace_id": alices}, headers=alice)
        assert own.status_code == 200 and own.json()["leaf_index"] == 3
        for params, param in (({"from": 3, "to": 2}, "from"), ({"from": 0}, "from"), ({"from": 1, "to": 9}, "to")):
            assert_envelope(await client.get("/v1/trust/proof/consistency", params=params), 400, param=param)
        same = await get(client, "/v1/trust/proof/consistency", **{"from": 4})
        assert same["proof"] == [] and same["first_root"] == same["second_root"]


@pytest.mark.parametrize("path", ["/v1/trust/tree", "/v1/trust/proof/consistency?from=1"])
async def test_proof_routes_need_the_bearer_and_the_panel(
    app_factory: Callable[..., FastAPI], backend: Backend, path: str
) -> None:
    async with panel(app_factory, backend) as (client, _):
        assert_envelope(await client.get(path, headers={"Authorization": "Bearer wrong"}), 401)
    app = app_factory(**backend.settings)
    from tests.conftest import running

    async with running(app) as client:
        assert assert_envelope(await client.get(path), 503)["code"] == "trust_panel_disabled"
