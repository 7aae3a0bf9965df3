"""What verification and access control trust is bound to a hash, on SQLite and on Postgres: the
tamper matrix, edits made directly in the database, each caught by the service's verify routes
(and, for what needs a root signed before the edit, by the signed checkpoints: the latest stored
one and the witness file's)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from app.lifespan import AppState
from app.receipts.chain import GENESIS, entry_canonical, link
from app.receipts.notes import Signer, split_note
from tests.api.test_receipts import chat, panel, run_verifier
from tests.conftest import Backend, assert_envelope

ALICE = {"Authorization": "Bearer alice-token-0123456789"}
SETTINGS = {"principals": "alice=alice-token-0123456789", "trust_checkpoint_interval_sec": 3600}


@dataclass
class Log:
    backend: Backend
    state: AppState
    ids: list[str]  # three owner's traces, oldest first; ids[1] is the one tampered with unless said


async def sign(state: AppState) -> None:
    await state.tracer.flush()
    assert state.trust is not None and state.trust.checkpointer is not None
    await state.trust.checkpointer.sign()


async def rewrite_history(log: Log) -> None:
    """The database owner's edit: trace 2's payload changed, its chain, its recorded head and every
    later ledger entry recomputed so that every link and hash in the database agrees."""
    backend, trace_id = log.backend, log.ids[1]
    steps = await backend.fetch("SELECT * FROM trace_steps WHERE trace_id = $1 ORDER BY seq", trace_id)
    prev = GENESIS
    for step in steps:
        text = step["step_json"].replace("demo", "evil")
        digest = link(prev, text)
        await backend.execute(
            "UPDATE trace_steps SET step_json = $1, prev_hash = $2, step_hash = $3 WHERE id = $4",
            text,
            prev,
            digest,
            step["id"],
        )
        prev = digest
    await backend.execute("UPDATE traces SET head_hash = $1 WHERE id = $2", prev, trace_id)
    entries = await backend.fetch("SELECT * FROM trace_ledger ORDER BY seq")
    entry_prev = GENESIS
    for entry in entries:
        if entry["trace_id"] == trace_id:
            entry["head_hash"] = prev
        digest = link(entry_prev, entry_canonical(entry))
        await backend.execute(
            "UPDATE trace_ledger SET head_hash = $1, prev_hash = $2, entry_hash = $3 WHERE seq = $4",
            entry["head_hash"],
            entry_prev,
            digest,
            entry["seq"],
        )
        entry_prev = digest


async def edit_payload(log: Log) -> None:
    await log.backend.execute(
        "UPDATE trace_steps SET step_json = REPLACE(step_json, 'demo', 'evil') WHERE trace_id = $1 AND seq = 2",
        log.ids[1],
    )


async def edit_created_at(log: Log) -> None:
    await log.backend.execute(
        "UPDATE trace_steps SET created_at = '2020-01-01T00:00:00.000000+00:00' WHERE trace_id = $1 AND seq = 2",
        log.ids[1],
    )


async def delete_step(log: Log) -> None:
    await log.backend.execute("DELETE FROM trace_steps WHERE trace_id = $1 AND seq = 1", log.ids[1])


async def swap_seqs(log: Log) -> None:
    for sql in (
        "UPDATE trace_steps SET seq = 99 WHERE trace_id = $1 AND seq = 1",
        "UPDATE trace_steps SET seq = 1 WHERE trace_id = $1 AND seq = 2",
        "UPDATE trace_steps SET seq = 2 WHERE trace_id = $1 AND seq = 99",
    ):
        await log.backend.execute(sql, log.ids[1])


async def delete_every_step(log: Log) -> None:
    await log.backend.execute("DELETE FROM trace_steps WHERE trace_id = $1", log.ids[1])


async def hide_truncation(log: Log) -> None:
    """The newest trace cut to its first step and made to look unfinished, its ledger row gone:
    every link that is left agrees."""
    newest = log.ids[2]
    await log.backend.execute("DELETE FROM trace_steps WHERE trace_id = $1 AND seq = 2", newest)
    await log.backend.execute(
        "UPDATE traces SET finished_at = NULL, ledger_seq = NULL, step_count = NULL, head_hash = NULL WHERE id = $1",
        newest,
    )
    await log.backend.execute("DELETE FROM trace_ledger WHERE trace_id = $1", newest)


async def give_to_alice(log: Log) -> None:
    await log.backend.execute("UPDATE traces SET principal = 'alice' WHERE id = $1", log.ids[1])


async def edit_finished_at(log: Log) -> None:
    await log.backend.execute(
        "UPDATE traces SET finished_at = '2020-01-01T00:00:00.000000+00:00' WHERE id = $1", log.ids[1]
    )


async def edit_ledger_seq(log: Log) -> None:
    await log.backend.execute("UPDATE traces SET ledger_seq = 3 WHERE id = $1", log.ids[1])


async def edit_ledger_principal(log: Log) -> None:
    await log.backend.execute("UPDATE trace_ledger SET principal = 'alice' WHERE trace_id = $1", log.ids[1])


async def rewrite_and_drop_checkpoints(log: Log) -> None:
    await rewrite_history(log)
    await log.backend.execute("DELETE FROM trust_checkpoints")


async def roll_back(log: Log) -> None:
    """The database as it was before the newest trace: consistent, and older than the witness."""
    newest = log.ids[2]
    for sql in (
        "DELETE FROM trace_steps WHERE trace_id = $1",
        "DELETE FROM traces WHERE id = $1",
        "DELETE FROM trace_ledger WHERE trace_id = $1",
    ):
        await log.backend.execute(sql, newest)
    await log.backend.execute("DELETE FROM trust_checkpoints WHERE tree_size > 2")


async def fork(log: Log) -> None:
    """A second history of the same size, signed by the service's own key (its checkpoints
    dropped, the signer signs the rewritten tree): the witness holds both."""
    await rewrite_and_drop_checkpoints(log)
    await sign(log.state)


async def sign_with_another_key(log: Log) -> None:
    [row] = await log.backend.fetch("SELECT tree_size, note FROM trust_checkpoints ORDER BY tree_size DESC LIMIT 1")
    text, _ = split_note(row["note"])
    other = Signer.generate(log.state.trust.checkpointer.signer.name)  # type: ignore[union-attr]
    await log.backend.execute(
        "UPDATE trust_checkpoints SET note = $1 WHERE tree_size = $2", other.sign(text), row["tree_size"]
    )


async def edit_step_type(log: Log) -> None:
    await log.backend.execute(
        "UPDATE trace_steps SET step_type = 'innocent' WHERE trace_id = $1 AND seq = 1", log.ids[1]
    )


async def insert_forged_step(log: Log) -> None:
    """A careful forger: a well-formed step 2 that links to step 1 (the old step 2 moved to 3)."""
    trace_id = log.ids[1]
    [first] = await log.backend.fetch("SELECT step_hash FROM trace_steps WHERE trace_id = $1 AND seq = 1", trace_id)
    at = "2026-01-01T00:00:00+00:00"
    body = {
        "created_at": at,
        "payload": {"approved": True},
        "seq": 2,
        "step_type": "tool_approval",
        "trace_id": trace_id,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    await log.backend.execute("UPDATE trace_steps SET seq = 3 WHERE trace_id = $1 AND seq = 2", trace_id)
    await log.backend.execute(
        "INSERT INTO trace_steps (trace_id, seq, step_type, step_json, created_at, prev_hash, step_hash)"
        " VALUES ($1, 2, 'tool_approval', $2, $3, $4, $5)",
        trace_id,
        text,
        at,
        first["step_hash"],
        link(first["step_hash"], text),
    )


async def truncate_tail(log: Log) -> None:
    await log.backend.execute("DELETE FROM trace_steps WHERE trace_id = $1 AND seq = 2", log.ids[1])


async def truncate_and_forge_head(log: Log) -> None:
    trace_id = log.ids[1]
    [first] = await log.backend.fetch("SELECT step_hash FROM trace_steps WHERE trace_id = $1 AND seq = 1", trace_id)
    await log.backend.execute("DELETE FROM trace_steps WHERE trace_id = $1 AND seq = 2", trace_id)
    await log.backend.execute(
        "UPDATE traces SET step_count = 1, head_hash = $1 WHERE id = $2", first["step_hash"], trace_id
    )


async def delete_trace(log: Log) -> None:
    await log.backend.execute("DELETE FROM trace_steps WHERE trace_id = $1", log.ids[1])
    await log.backend.execute("DELETE FROM traces WHERE id = $1", log.ids[1])


async def edit_ledger_entry(log: Log) -> None:
    await log.backend.execute("UPDATE trace_ledger SET step_count = 9 WHERE trace_id = $1", log.ids[1])


async def delete_newest_ledger_entry(log: Log) -> None:
    await log.backend.execute("DELETE FROM trace_ledger WHERE trace_id = $1", log.ids[2])


Tamper = Callable[[Log], Awaitable[None]]
# (tamper, the ledger verify's reason, the trace it concerns, that trace's own verify's reason
# (None: it verifies, and only the witnessed log can tell), the offline verifier's reason on its exported
# bundle given the log's key and the witness file as it was before the edit (None: the service
# exports nothing, 404 trace_deleted; a bundle exported before still verifies, as it should))
MATRIX: dict[str, tuple[Tamper, str, int, str | None, str | None]] = {
    # The edits docs/receipts.md listed before the log was signed:
    "step_type edited": (edit_step_type, "chain_broken", 1, "chain_broken", "chain_broken"),
    "forged step inserted": (insert_forged_step, "chain_broken", 1, "chain_broken", "chain_broken"),
    "tail truncated": (truncate_tail, "chain_broken", 1, "chain_broken", "chain_broken"),
    "tail truncated, head forged": (
        truncate_and_forge_head,
        "ledger_mismatch",
        1,
        "ledger_mismatch",
        "ledger_mismatch",
    ),
    "whole trace deleted": (delete_trace, "trace_deleted", 1, "trace_deleted", None),
    "ledger entry edited": (edit_ledger_entry, "ledger_broken", 1, "ledger_mismatch", "ledger_mismatch"),
    "newest ledger entry deleted": (delete_newest_ledger_entry, "ledger_broken", 2, "ledger_missing", "ledger_missing"),
    # And those the signed log is for:
    "payload edited": (edit_payload, "chain_broken", 1, "chain_broken", "chain_broken"),
    "step created_at edited": (edit_created_at, "chain_broken", 1, "chain_broken", "chain_broken"),
    "step deleted": (delete_step, "chain_broken", 1, "chain_broken", "chain_broken"),
    "two steps' seq swapped": (swap_seqs, "chain_broken", 1, "chain_broken", "chain_broken"),
    "every step deleted": (delete_every_step, "chain_broken", 1, "chain_broken", "chain_broken"),
    "newest trace truncated, its finish and ledger row erased": (
        hide_truncation,
        "log_truncated",
        2,
        "log_truncated",
        "not_in_log",
    ),
    "principal changed": (give_to_alice, "principal_mismatch", 1, "principal_mismatch", "principal_mismatch"),
    "finished_at edited": (edit_finished_at, "ledger_mismatch", 1, "ledger_mismatch", "ledger_mismatch"),
    "ledger_seq edited": (edit_ledger_seq, "ledger_mismatch", 1, "ledger_mismatch", "ledger_mismatch"),
    "ledger entry's principal edited": (
        edit_ledger_principal,
        "ledger_broken",
        1,
        "ledger_mismatch",
        "ledger_mismatch",
    ),
    "history rewritten, every hash recomputed": (
        rewrite_history,
        "checkpoint_mismatch",
        1,
        "checkpoint_mismatch",
        "inclusion_failed",
    ),
    "history rewritten and the checkpoints dropped": (
        rewrite_and_drop_checkpoints,
        "checkpoint_mismatch",
        1,
        None,
        "log_forked",
    ),
    "database rolled back": (roll_back, "log_truncated", 1, None, "stale_checkpoint"),
    "log forked": (fork, "log_forked", 1, None, "log_forked"),
    "checkpoint signed by another key": (
        sign_with_another_key,
        "checkpoint_invalid",
        1,
        "checkpoint_invalid",
        "checkpoint_invalid",
    ),
}


@pytest.mark.parametrize("case", list(MATRIX))
async def test_tampering_is_detected_by_the_verify_routes(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path, case: str
) -> None:
    tamper, ledger_reason, target, trace_reason, offline_reason = MATRIX[case]
    witness = tmp_path / "witness.jsonl"
    trusted, bundle_path = tmp_path / "trusted.jsonl", tmp_path / "bundle.json"
    async with panel(app_factory, backend, trust_witness_path=witness, **SETTINGS) as (client, state):
        ids = [await chat(client, state) for _ in range(2)]
        await sign(state)  # a checkpoint of 2 entries
        ids.append(await chat(client, state))
        await sign(state)  # and of 3
        intact = (await client.get("/v1/trust/ledger/verify")).json()
        assert intact["verified"] and intact["traces_checked"] == 3, intact
        assert [c["tree_size"] for c in intact["checkpoints_checked"]] == [3, 3]
        key = (await client.get("/v1/trust/public-key")).json()["verifier_key"]
        trusted.write_text(witness.read_text())  # what a monitor shipped off the machine
        bundle_path.write_text((await client.get(f"/v1/trust/trace/{ids[target]}/export")).text)
        before = run_verifier(bundle_path, "--key", key, "--checkpoint", str(trusted))
        assert before.returncode == 0, before.stdout + before.stderr
        await tamper(Log(backend, state, ids))
        ledger = (await client.get("/v1/trust/ledger/verify")).json()
        trace = (await client.get(f"/v1/trust/verify/{ids[target]}")).json()
        exported = await client.get(f"/v1/trust/trace/{ids[target]}/export")
    if offline_reason is None:
        assert assert_envelope(exported, 404)["code"] == "trace_deleted"
        return
    assert exported.status_code == 200, exported.text
    bundle_path.write_text(exported.text)
    offline = run_verifier(bundle_path, "--key", key, "--checkpoint", str(trusted))
    assert offline.returncode == 1 and f": {offline_reason}" in offline.stdout, offline.stdout + offline.stderr
    assert not ledger["verified"] and ledger["reason"] == ledger_reason, ledger
    if ledger_reason == "chain_broken" and target == 1:
        assert ledger["traces_checked"] == 2 and ledger["broken_at"] == 2  # it stopped at the broken one
    if trace_reason is None:
        assert trace["verified"], trace  # only a root signed before the edit can tell
    else:
        assert not trace["verified"] and trace["reason"] == trace_reason, trace


async def test_a_principal_column_edit_gives_no_access(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    """The principal column decides who reads a receipt; it is held to the hashed request step's."""
    async with panel(app_factory, backend, **SETTINGS) as (client, state):
        owners = await chat(client, state)
        alices = await chat(client, state, **ALICE)
        await backend.execute("UPDATE traces SET principal = 'alice' WHERE id = $1", owners)
        for path in ("/v1/trust/trace/{}", "/v1/trust/verify/{}", "/v1/trust/trace/{}/export"):
            hidden = assert_envelope(await client.get(path.format(owners), headers=ALICE), 404)
            assert hidden["code"] == "trace_not_found"
            assert (await client.get(path.format(alices), headers=ALICE)).status_code == 200
        proof = await client.get("/v1/trust/proof/inclusion", params={"trace_id": owners}, headers=ALICE)
        assert assert_envelope(proof, 404)["code"] == "trace_not_found"
        audit = await client.post("/v1/audit/verify", json={"trace_id": owners}, headers=ALICE)
        assert assert_envelope(audit, 404)["code"] == "trace_not_found"
        events = (await client.get("/v1/trust/events", params={"limit": 100}, headers=ALICE)).json()
        assert {e["trace_id"] for e in events["events"]} == {alices}
        # The owner still sees it, as not verified.
        verdict = (await client.get(f"/v1/trust/verify/{owners}")).json()
    assert not verdict["verified"] and verdict["reason"] == "principal_mismatch"


async def test_ledger_entries_commit_to_the_principal_and_older_entries_still_verify(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    """New entries are version 2 (with the trace's principal); an entry written by an earlier
    version (no principal) verifies as it was written, in the ledger and as a Merkle leaf."""
    async with panel(app_factory, backend, **SETTINGS) as (client, state):
        ids = [await chat(client, state), await chat(client, state, **ALICE)]
        rows = await backend.fetch("SELECT * FROM trace_ledger ORDER BY seq")
        assert [r["principal"] for r in rows] == ["owner", "alice"]
        assert json.loads(entry_canonical(rows[1]))["principal"] == "alice"
        # The first entry as a version before this one wrote it: no principal, hashed without it.
        old = {**rows[0], "principal": None}
        await backend.execute(
            "UPDATE trace_ledger SET principal = NULL, entry_hash = $1 WHERE seq = 1",
            link(GENESIS, entry_canonical(old)),
        )
        second = {**rows[1], "prev_hash": link(GENESIS, entry_canonical(old))}
        await backend.execute(
            "UPDATE trace_ledger SET prev_hash = $1, entry_hash = $2 WHERE seq = 2",
            second["prev_hash"],
            link(second["prev_hash"], entry_canonical(second)),
        )
        await sign(state)
        ledger = (await client.get("/v1/trust/ledger/verify")).json()
        verdicts = [(await client.get(f"/v1/trust/verify/{trace_id}")).json() for trace_id in ids]
        proof = (await client.get("/v1/trust/proof/inclusion", params={"trace_id": ids[0]})).json()
    assert ledger["verified"] and ledger["traces_checked"] == 2, ledger
    assert all(v["verified"] for v in verdicts), verdicts
    assert "principal" not in json.loads(proof["entry"])


async def test_ledger_verify_reads_the_traces_in_bulk(
    app_factory: Callable[..., FastAPI], backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every listed trace is verified, a few at a time (here 2 per read), not one query each."""
    import app.receipts.trust as trust_module

    monkeypatch.setattr(trust_module, "TRACES_PER_READ", 2)
    async with panel(app_factory, backend, **SETTINGS) as (client, state):
        ids = [await chat(client, state) for _ in range(5)]
        store = state.trust.store  # type: ignore[union-attr]
        calls: list[int] = []
        real = store.steps_by_trace

        async def counted(trace_ids: Any) -> Any:
            calls.append(len(trace_ids))
            return await real(trace_ids)

        monkeypatch.setattr(store, "steps_by_trace", counted)
        intact = (await client.get("/v1/trust/ledger/verify")).json()
        await backend.execute(
            "UPDATE trace_steps SET step_json = REPLACE(step_json, 'demo', 'evil') WHERE trace_id = $1 AND seq = 2",
            ids[4],
        )
        broken = (await client.get("/v1/trust/ledger/verify")).json()
    assert intact["verified"] and intact["traces_checked"] == 5 and calls[:3] == [2, 2, 1], (intact, calls)
    assert not broken["verified"] and broken["reason"] == "chain_broken" and broken["broken_at"] == 5
    assert broken["traces_checked"] == 5  # the failing one is the last: every trace before it held
