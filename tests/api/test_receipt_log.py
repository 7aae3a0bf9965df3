"""The receipt log's Merkle tree on SQLite and on the real Postgres server: the tree the writer
grows batch by batch, the tree head, inclusion and consistency proofs checked by the RFC 9162
verifier written in tests/unit/test_merkle.py (not the service's code), an upgrade from a
database without the tree, and every bad input with its status and envelope."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI

from app.lifespan import AppState, StartupError
from app.receipts.chain import entry_canonical
from tests.api.test_receipts import CHAT, HELLO, chat, panel
from tests.conftest import Backend, assert_envelope, running
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
    return [entry_canonical(r).encode() for r in rows]


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
        latest = await get(client, "/v1/trust/proof/inclusion", trace_id=ids[3], tree_size=TRACES)
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
        proof = await get(client, "/v1/trust/proof/inclusion", trace_id=ids[20], tree_size=70)
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
    async with running(app_factory(**backend.settings)) as client:
        assert assert_envelope(await client.get(path), 503)["code"] == "trust_panel_disabled"


# --- signed checkpoints ------------------------------------------------------------------------


def open_signed_note(note: str, verifier_key: str) -> str:
    """The C2SP signed-note check, written here from the specification: the key id is the first
    four bytes of SHA-256(name || 0x0A || 0x01 || key), the signature covers the text with its
    final newline, and a line of this key that fails rejects the note."""
    name, hex_id, encoded = verifier_key.split("+", 2)
    raw = base64.b64decode(encoded)
    assert raw[0] == 1 and len(raw) == 33
    assert hashlib.sha256(name.encode() + b"\n\x01" + raw[1:]).digest()[:4].hex() == hex_id
    text, _, signatures = note.rpartition("\n\n")
    text += "\n"
    for line in signatures.rstrip("\n").split("\n"):
        assert line.startswith("\u2014 ")
        signer, sig = line[2:].split(" ")
        blob = base64.b64decode(sig)
        if signer == name and blob[:4].hex() == hex_id:
            Ed25519PublicKey.from_public_bytes(raw[1:]).verify(blob[4:], text.encode())
            return text
    raise AssertionError("not signed by this key")


async def checkpoint_of(client: httpx.AsyncClient, size: int) -> dict[str, Any]:
    """The latest checkpoint once the signer (every 0.1 s in these tests) has signed ``size``."""
    for _ in range(200):
        latest = await get(client, "/v1/trust/checkpoint")
        if latest["tree_size"] == size:
            return latest
        await asyncio.sleep(0.05)
    raise AssertionError(f"no checkpoint of {size} entries was signed")


FAST = {"trust_checkpoint_interval_sec": 0.1}


async def test_checkpoints_are_signed_notes_of_the_tree(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.jsonl"
    settings = {"trust_checkpoint_interval_sec": 0.1, "trust_witness_path": witness}
    async with panel(app_factory, backend, **settings) as (client, state):
        ids = await fill(client, state, 20)
        key = await get(client, "/v1/trust/public-key")
        latest = await get(client, "/v1/trust/checkpoint")
        text = open_signed_note(latest["note"], key["verifier_key"])
        origin, size, root = text.rstrip("\n").split("\n")
        assert origin == key["origin"] == key["key_name"] and origin.startswith("orchestrators.local/receipts-")
        rfc = Rfc(await ledger_entries(backend))
        assert int(size) == latest["tree_size"] and unb64(root) == rfc.mth(0, int(size))
        plain = await client.get("/v1/trust/checkpoint", params={"format": "note"})
        assert plain.headers["content-type"].startswith("text/plain") and plain.text == latest["note"]
        # The tree grows: the signer signs again within its interval, and the old checkpoint is a
        # prefix of the new one.
        ids += await fill(client, state, 5)
        newest = await checkpoint_of(client, 25)
        rfc = Rfc(await ledger_entries(backend))
        proof = await get(client, "/v1/trust/proof/consistency", **{"from": latest["tree_size"], "to": 25})
        path = [unb64(p) for p in proof["proof"]]
        assert rfc_verify_consistency(latest["tree_size"], 25, unb64(root), rfc.mth(0, 25), path)
        # An inclusion proof defaults to the latest checkpoint's tree, and carries its note.
        inclusion = await get(client, "/v1/trust/proof/inclusion", trace_id=ids[2])
        assert inclusion["tree_size"] == 25 and inclusion["checkpoint"] == newest["note"]
        sizes = [c["tree_size"] for c in (await get(client, "/v1/trust/checkpoints"))["checkpoints"]]
        assert sizes == sorted(set(sizes)) and latest["tree_size"] in sizes and sizes[-1] == 25
        later = await get(client, "/v1/trust/checkpoints", since=latest["tree_size"])
        assert [c["tree_size"] for c in later["checkpoints"]] == [s for s in sizes if s > latest["tree_size"]]
        ids += await fill(client, state, 2)
    # Shutdown signs what the drained writer committed last; every checkpoint went to the witness.
    stored = await backend.fetch("SELECT tree_size, note FROM trust_checkpoints ORDER BY tree_size")
    assert stored[-1]["tree_size"] == 27
    witnessed = [json.loads(line) for line in witness.read_text().splitlines()]
    assert [(w["tree_size"], w["note"]) for w in witnessed] == [(r["tree_size"], r["note"]) for r in stored]
    for entry in witnessed:
        open_signed_note(entry["note"], key["verifier_key"])


async def test_the_signing_key_is_made_once_private_and_kept(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    async with panel(app_factory, backend) as (client, _):
        first = await get(client, "/v1/trust/public-key")
    path = tmp_path / "trust-signing-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("PRIVATE+KEY+" + first["key_name"] + "+")
    assert first["verifier_key"] not in path.read_text()  # the file holds the private key, not the public
    async with panel(app_factory, backend) as (client, _):
        assert (await get(client, "/v1/trust/public-key"))["verifier_key"] == first["verifier_key"]
    path.chmod(0o644)
    with pytest.raises(StartupError, match=r"ORCH_TRUST_SIGNING_KEY_PATH.*chmod 600"):
        async with panel(app_factory, backend):
            pass
    path.write_text("PRIVATE+KEY+not-a-key\n")
    path.chmod(0o600)
    with pytest.raises(StartupError, match="ORCH_TRUST_SIGNING_KEY_PATH"):
        async with panel(app_factory, backend):
            pass


async def test_a_rotated_key_keeps_the_old_checkpoints_checkable(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    async with panel(app_factory, backend, **FAST) as (client, state):
        await fill(client, state, 3)
        old = await checkpoint_of(client, 3)
        old_key = (await get(client, "/v1/trust/public-key"))["verifier_key"]
    (tmp_path / "trust-signing-key").unlink()  # rotation: a new key file
    async with panel(app_factory, backend, **FAST) as (client, state):
        await fill(client, state, 2)
        new = await checkpoint_of(client, 5)
        keys = await get(client, "/v1/trust/public-key")
    assert keys["verifier_key"] != old_key
    assert [k["verifier_key"] for k in keys["keys"]] == [old_key, keys["verifier_key"]]
    open_signed_note(old["note"], old_key)
    open_signed_note(new["note"], keys["verifier_key"])
    with pytest.raises(InvalidSignature):  # the same key name and id with a forged text
        open_signed_note(new["note"].replace(str(new["tree_size"]), "999", 1), keys["verifier_key"])
    with pytest.raises(AssertionError, match="not signed by this key"):
        open_signed_note(new["note"], old_key)


async def test_no_checkpoint_on_an_empty_log(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    async with panel(app_factory, backend) as (client, _):
        assert assert_envelope(await client.get("/v1/trust/checkpoint"), 404)["code"] == "no_checkpoint"
        assert (await get(client, "/v1/trust/checkpoints"))["checkpoints"] == []
        for params in ({"format": "xml"}, {"limit": 0}):
            path = "/v1/trust/checkpoint" if "format" in params else "/v1/trust/checkpoints"
            assert_envelope(await client.get(path, params=params), 400)
