"""Receipt retention on SQLite and on the real Postgres server: old traces lose their steps and
verify as ``pruned`` while their ledger entries keep proving inclusion (checked with the RFC 9162
verifier written in tests/unit/test_merkle.py) and consistency under checkpoints signed before
the prune; a trace deleted by hand is still ``trace_deleted``; the archive written before the
delete verifies offline; the size cap prunes the oldest first; requests are answered while a
large prune runs; SQLite hands the space back; nothing is pruned by default.

Time-based retention is tested without waiting: the job's clock is moved past the traces."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from app.lifespan import AppState
from app.receipts.retention import RetentionJob
from app.settings import Settings
from tests.api.test_receipt_log import FAST, checkpoint_of, fill, get, ledger_entries, open_signed_note, unb64
from tests.api.test_receipts import CHAT, HELLO, chat, panel, run_verifier, verify
from tests.conftest import Backend, assert_envelope
from tests.unit.test_merkle import Rfc, rfc_verify_consistency, rfc_verify_inclusion

DAY = 86_400
RETAIN = {"trace_retention_days": 1, **FAST}


def job_of(state: AppState) -> RetentionJob:
    assert state.retention is not None
    return state.retention


def days_later(days: float, since: float | None = None) -> Callable[[], float]:
    """A clock ``days`` past ``since`` (now): traces finished before ``since`` are that old."""
    at = (time.time() if since is None else since) + days * DAY
    return lambda: at


async def step_counts(backend: Backend, trace_ids: list[str]) -> dict[str, int]:
    rows = await backend.fetch("SELECT trace_id, COUNT(*) AS n FROM trace_steps GROUP BY trace_id")
    counts = {row["trace_id"]: int(row["n"]) for row in rows}
    return {trace_id: counts.get(trace_id, 0) for trace_id in trace_ids}


async def test_old_traces_are_pruned_and_still_prove_inclusion_and_consistency(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    async with panel(app_factory, backend, **RETAIN) as (client, state):
        old = await fill(client, state, 20)
        boundary = time.time()
        new = await fill(client, state, 5, seed=8)
        before = await checkpoint_of(client, 25)  # signed before the prune
        rfc = Rfc(await ledger_entries(backend))
        job = job_of(state)
        assert (await job.run_once()).traces == 0  # nothing is a day old yet
        job.clock = days_later(1, since=boundary)
        result = await job.run_once()
        assert result.traces == 20 and result.batches == 1
        counts = await step_counts(backend, old + new)
        assert all(counts[t] == 0 for t in old) and all(counts[t] == 2 for t in new)
        assert await backend.fetch("SELECT COUNT(*) AS n FROM traces") == [{"n": 5}]

        # A pruned trace verifies as pruned, with the date and the head its ledger entry keeps.
        pruned = await verify(client, old[3])
        assert not pruned["verified"] and pruned["reason"] == "pruned"
        assert pruned["pruned_at"][:4].isdigit() and "retention" in pruned["detail"]
        assert pruned["ledger_seq"] == 4 and pruned["step_count"] == 2 and len(pruned["head_hash"]) == 64
        # The batch's marks are vouched for by a note signed with the checkpoints' key.
        key = (await get(client, "/v1/trust/public-key"))["verifier_key"]
        assert pruned["prune_signature"] == "verified"
        note = open_signed_note(pruned["prune_note"], key).split("\n")
        assert note[0] == "orchestrators.receipt-prune.v1" and note[2] == "range 1 20"
        assert note[3] == f"pruned_at {pruned['pruned_at']}" and note[4].startswith("marks ")
        report = await get(client, f"/v1/trust/trace/{old[3]}")
        assert report["reason"] == "pruned" and report["steps"] == [] and report["pruned_at"] == pruned["pruned_at"]
        gone = await client.get(f"/v1/trust/trace/{old[3]}/export")
        assert assert_envelope(gone, 404)["code"] == "trace_pruned"
        audit = (await client.post("/v1/audit/verify", json={"trace_id": old[3]})).json()
        assert audit["valid"] is False and audit["receipt"]["reason"] == "pruned"
        assert (await verify(client, new[0]))["reason"] == "intact"

        # Its leaf still proves inclusion under the checkpoint signed before the prune.
        proof = await get(client, "/v1/trust/proof/inclusion", trace_id=old[3], tree_size=25)
        path = [unb64(p) for p in proof["audit_path"]]
        assert unb64(proof["leaf_hash"]) == rfc.mth(3, 4)
        assert rfc_verify_inclusion(3, 25, unb64(proof["leaf_hash"]), path, unb64(before["root_hash"]))
        # The log keeps growing consistently with that checkpoint.
        more = await fill(client, state, 3, seed=9)
        after = await checkpoint_of(client, 28)
        consistency = await get(client, "/v1/trust/proof/consistency", **{"from": 25, "to": 28})
        path = [unb64(p) for p in consistency["proof"]]
        assert rfc_verify_consistency(25, 28, unb64(before["root_hash"]), unb64(after["root_hash"]), path)
        assert Rfc(await ledger_entries(backend)).mth(0, 28) == unb64(after["root_hash"])

        # The ledger verifies over the pruned entries.
        ledger = await get(client, "/v1/trust/ledger/verify")
        assert ledger["verified"] and ledger["entries"] == 28 and ledger["pruned"] == 20

        # The prune is recorded: one batch, its ledger range, each trace with its state.
        runs = await backend.fetch("SELECT first_seq, last_seq, traces, reason FROM trace_prunes")
        assert runs == [{"first_seq": 1, "last_seq": 20, "traces": 20, "reason": "age"}]
        marks = await backend.fetch("SELECT DISTINCT state FROM trace_pruned")
        assert marks == [{"state": "intact"}]

        # A trace deleted by hand is still trace_deleted, for the trace and for the ledger.
        await backend.execute("DELETE FROM trace_steps WHERE trace_id = $1", new[1])
        await backend.execute("DELETE FROM traces WHERE id = $1", new[1])
        deleted = await verify(client, new[1])
        assert not deleted["verified"] and deleted["reason"] == "trace_deleted" and "pruned_at" not in deleted
        ledger = await get(client, "/v1/trust/ledger/verify")
        assert not ledger["verified"] and ledger["reason"] == "trace_deleted" and ledger["broken_at"] == 22
        assert (await verify(client, more[0]))["verified"]


async def test_a_trace_deleted_before_the_prune_stays_deleted(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    """The job verifies each trace before deleting it: pruning never launders a deletion."""
    async with panel(app_factory, backend, **RETAIN) as (client, state):
        ids = await fill(client, state, 6)
        await backend.execute("DELETE FROM trace_steps WHERE trace_id = $1", ids[2])
        await backend.execute("DELETE FROM traces WHERE id = $1", ids[2])
        await backend.execute(
            "UPDATE trace_steps SET step_json = REPLACE(step_json, 'demo', 'evil') WHERE trace_id = $1", ids[4]
        )
        # A column the hashes hold: the owner changed in the record is caught before the prune too.
        await backend.execute("UPDATE traces SET principal = 'alice' WHERE id = $1", ids[5])
        job = job_of(state)
        job.clock = days_later(2)
        assert (await job.run_once()).traces == 6
        assert (await verify(client, ids[0]))["reason"] == "pruned"
        assert (await verify(client, ids[5]))["reason"] == "principal_mismatch"
        deleted = await verify(client, ids[2])
        assert deleted["reason"] == "trace_deleted" and "already trace_deleted" in deleted["detail"]
        assert (await verify(client, ids[4]))["reason"] == "chain_broken"
        ledger = await get(client, "/v1/trust/ledger/verify")
        assert not ledger["verified"] and ledger["reason"] == "trace_deleted" and ledger["broken_at"] == 3
        # Editing the mark to hide the deletion breaks the batch's signed note, for the whole batch.
        await backend.execute("UPDATE trace_pruned SET state = 'intact' WHERE ledger_seq = 3")
        for trace_id in (ids[2], ids[0]):
            edited = await verify(client, trace_id)
            assert edited["reason"] == "prune_mismatch" and edited["prune_signature"] == "mismatch"
        ledger = await get(client, "/v1/trust/ledger/verify")
        assert not ledger["verified"] and ledger["broken_at"] == 1 and ledger["pruned"] == 0


async def test_a_deletion_marked_as_pruned_by_hand_is_caught(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    """Whoever writes the database without the signing key cannot pass a deletion off as pruned."""
    async with panel(app_factory, backend, **RETAIN) as (client, state):
        old = await fill(client, state, 3)
        job = job_of(state)
        job.clock = days_later(2)
        assert (await job.run_once()).traces == 3
        new = await fill(client, state, 2, seed=8)
        (real,) = await backend.fetch("SELECT note, pruned_at FROM trace_prunes")
        await backend.execute("DELETE FROM trace_steps WHERE trace_id = $1", new[0])
        await backend.execute("DELETE FROM traces WHERE id = $1", new[0])
        await backend.execute("INSERT INTO trace_pruned VALUES (4, 'owner', 4, 'intact')")
        await backend.execute(
            "INSERT INTO trace_prunes VALUES (4, 4, 1, 'age', $1, NULL, $2)", real["pruned_at"], real["note"]
        )
        forged = await verify(client, new[0])
        assert forged["reason"] == "prune_mismatch" and forged["prune_signature"] == "mismatch"
        ledger = await get(client, "/v1/trust/ledger/verify")
        assert not ledger["verified"] and ledger["reason"] == "trace_deleted" and ledger["broken_at"] == 4
        assert ledger["pruned"] == 3
        assert (await verify(client, old[0]))["reason"] == "pruned"


async def test_a_pruned_receipt_is_scoped_like_the_trace(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    alice = {"Authorization": "Bearer alice-token-0123456789"}
    settings = {**RETAIN, "principals": "alice=alice-token-0123456789,bob=bob-token-0123456789"}
    async with panel(app_factory, backend, **settings) as (client, state):
        alices = await chat(client, state, **alice)
        owners = await chat(client, state)
        job = job_of(state)
        job.clock = days_later(2)
        assert (await job.run_once()).traces == 2
        own = await client.get(f"/v1/trust/verify/{alices}", headers=alice)
        assert own.status_code == 200 and own.json()["reason"] == "pruned"
        for trace_id, headers in ((owners, alice), (alices, {"Authorization": "Bearer bob-token-0123456789"})):
            hidden = await client.get(f"/v1/trust/verify/{trace_id}", headers=headers)
            assert assert_envelope(hidden, 404)["code"] == "trace_not_found"
        proof = await client.get("/v1/trust/proof/inclusion", params={"trace_id": alices}, headers=alice)
        assert proof.status_code == 200 and proof.json()["leaf_index"] == 0
    async with panel(app_factory, backend, **settings) as (client, _):  # a restart: the marks stay
        again = await client.get(f"/v1/trust/verify/{alices}", headers=alice)
        assert again.status_code == 200 and again.json()["reason"] == "pruned"
        assert again.json()["prune_signature"] == "verified"
        assert (await get(client, "/v1/trust/ledger/verify"))["verified"]
    (tmp_path / "trust-signing-key").unlink()  # a rotated key: the old notes are another key's
    async with panel(app_factory, backend, **settings) as (client, _):
        rotated = (await client.get(f"/v1/trust/verify/{alices}", headers=alice)).json()
        assert rotated["reason"] == "pruned" and rotated["prune_signature"] == "other_key"
        assert (await get(client, "/v1/trust/ledger/verify"))["verified"]
    rows = await backend.fetch("SELECT version FROM schema_migrations WHERE component = 'trace_retention'")
    assert rows == [{"version": 1}]


async def test_the_archive_written_before_the_prune_verifies_offline(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    archive_dir = tmp_path / "archive"
    async with panel(app_factory, backend, **RETAIN, trace_archive_dir=archive_dir) as (client, state):
        ids = await fill(client, state, 30)
        exported = (await client.get(f"/v1/trust/trace/{ids[7]}/export")).json()
        checkpoint = await checkpoint_of(client, 30)
        key = (await get(client, "/v1/trust/public-key"))["verifier_key"]
        head = (await get(client, "/v1/trust/ledger"))["entries"][-1]["entry_hash"]
        job = job_of(state)
        job.clock = days_later(2)
        result = await job.run_once()
        assert result.traces == 30
    files = sorted(archive_dir.iterdir())
    assert [f.name for f in files] == ["receipts-000000000001-000000000030.json"] == result.archives
    archive = json.loads(files[0].read_text())
    assert archive["format"] == "orchestrators.archive.v1" and archive["reason"] == "age"
    assert archive["checkpoint"]["note"] == checkpoint["note"] and archive["missing"] == []
    assert "range 1 30" in open_signed_note(archive["prune_note"], key)
    # Each trace is kept as a v1 receipt bundle (record, steps, ledger entry): the same steps and
    # entry the export route gives; the archive's own checkpoint stands for the v2 bundle's proof.
    bundled = next(b for b in archive["traces"] if b["trace"]["id"] == ids[7])
    assert bundled["format"] == "orchestrators.receipt.v1"
    assert bundled["steps"] == exported["steps"] and bundled["ledger_entry"] == exported["ledger_entry"]
    good = run_verifier(files[0])
    assert good.returncode == 0 and "VERIFIED archive of ledger entries 1..30 (30 traces)" in good.stdout, good.stdout
    assert run_verifier(files[0], "--expected-head", head).returncode == 0
    path = tmp_path / "edited.json"
    cases: list[tuple[Callable[[dict[str, Any]], None], str]] = [
        (lambda a: a["traces"][5]["steps"][1].update(step_json="{}"), "chain_broken"),
        (lambda a: a["traces"].pop(9), "trace_missing"),
        (lambda a: a["ledger"]["entries"][3].update(step_count=9), "ledger_broken"),
        (lambda a: a["traces"][2]["ledger_entry"].update(created_at="2020-01-01T00:00:00+00:00"), "ledger_mismatch"),
    ]
    for edit, reason in cases:
        edited = json.loads(files[0].read_text())
        edit(edited)
        path.write_text(json.dumps(edited))
        bad = run_verifier(path)
        assert bad.returncode == 1 and reason in bad.stdout, (reason, bad.stdout)


async def test_an_archive_lists_what_was_already_lost_and_fails_closed(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    async with panel(app_factory, backend, **RETAIN, trace_archive_dir=blocked) as (client, state):
        ids = await fill(client, state, 4)
        job = job_of(state)
        job.clock = days_later(2)
        with pytest.raises(OSError):  # the archive cannot be written: nothing is deleted
            await job.run_once()
        assert (await step_counts(backend, ids)) == dict.fromkeys(ids, 2)
        assert (await verify(client, ids[0]))["reason"] == "intact"
        job.archive_dir = tmp_path / "archive"
        await backend.execute("DELETE FROM trace_steps WHERE trace_id = $1", ids[1])
        await backend.execute("DELETE FROM traces WHERE id = $1", ids[1])
        assert (await job.run_once()).traces == 4
    (archive,) = (tmp_path / "archive").iterdir()
    body = json.loads(archive.read_text())
    assert body["missing"] == [{"trace_id": ids[1], "ledger_seq": 2, "state": "trace_deleted"}]
    checked = run_verifier(archive)
    assert checked.returncode == 1 and "was trace_deleted when archived" in checked.stdout, checked.stdout


async def test_the_size_cap_prunes_the_oldest_first(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    # About 2 kB a trace: a cap of 20 kB keeps roughly the newest ten of forty.
    async with panel(app_factory, backend, trace_retention_max_mb=0.02) as (client, state):
        ids = await fill(client, state, 40)
        job = job_of(state)
        result = await job.run_once()
        assert 20 <= result.traces <= 36, result
        counts = await step_counts(backend, ids)
        kept = [trace_id for trace_id in ids if counts[trace_id]]
        assert kept == ids[result.traces :]  # the oldest went, in ledger order
        assert (await verify(client, ids[0]))["reason"] == "pruned"
        assert (await verify(client, ids[-1]))["reason"] == "intact"
        runs = await backend.fetch("SELECT reason FROM trace_prunes")
        assert {run["reason"] for run in runs} == {"size"}
        assert (await job.run_once()).traces == 0  # it fits now
        ledger = await get(client, "/v1/trust/ledger/verify")
        assert ledger["verified"] and ledger["pruned"] == result.traces


async def test_the_job_prunes_in_the_background(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    settings = {"trace_retention_max_mb": 0.000001, "trace_retention_interval_sec": 0.1}
    async with panel(app_factory, backend, **settings) as (client, state):
        ids = await fill(client, state, 5)
        for _ in range(100):
            if (await verify(client, ids[-1]))["reason"] == "pruned":
                break
            await asyncio.sleep(0.05)
        assert [(await verify(client, trace_id))["reason"] for trace_id in ids] == ["pruned"] * 5
        metrics = (await client.get("/metrics")).text
    assert 'orch_trace_pruned_total{reason="size"} 5.0' in metrics


TRACES_PRUNED_UNDER_LOAD = 20_000


async def test_requests_are_answered_while_a_large_prune_runs(
    app_factory: Callable[..., FastAPI], backend: Backend
) -> None:
    async with panel(app_factory, backend, **RETAIN) as (client, state):
        for number in range(TRACES_PRUNED_UNDER_LOAD):
            trace = state.tracer.begin(route=CHAT, request_id=str(number), principal="o", stream=False)
            trace.step("llm_provider", {"provider": "demo", "model": "demo", "latency_ms": 1, "usage": {"n": number}})
            trace.end()
        await state.tracer.flush()
        boundary = time.time()
        pages_before = await _pages(backend)
        job = job_of(state)
        job.clock = days_later(1, since=boundary)  # the chats sent during the prune are newer
        prune = asyncio.create_task(job.run_once())
        answered, slowest, chats = 0, 0.0, []
        while not prune.done():
            started = time.monotonic()
            health = await client.get("/health")
            slowest = max(slowest, time.monotonic() - started)
            assert health.status_code == 200
            answered += 1
            if answered % 5 == 0:  # and the receipts writer commits beside the pruner
                response = await client.post(CHAT, json=HELLO)
                assert response.status_code == 200
                chats.append(response.json()["request_id"])
            await asyncio.sleep(0.01)
        result = await prune
        assert result.traces == TRACES_PRUNED_UNDER_LOAD
        assert result.batches > 50  # small transactions, not one long one
        assert answered >= 10 and slowest < 2.0, (answered, slowest)
        await state.tracer.flush()
        assert chats and [(await verify(client, t))["reason"] for t in chats] == ["intact"] * len(chats)
        assert (await get(client, "/v1/trust/ledger/verify"))["verified"]
        ledger = await get(client, "/v1/trust/ledger", **{"from": 1, "to": 10})
        assert len(ledger["entries"]) == 10
        if backend.name == "sqlite":  # the freed pages went back to the file system
            assert result.pages_freed > 0
            pages_after = await _pages(backend)
            assert pages_after["freelist_count"] == 0
            assert pages_after["page_count"] < pages_before["page_count"] / 2, (pages_before, pages_after)
            # Moving those pages filled the WAL; it is truncated afterwards, not kept at that size.
            wal = Path(f"{backend.settings['trace_db_path']}-wal")
            assert wal.stat().st_size < 1024 * 1024, wal.stat().st_size


async def _pages(backend: Backend) -> dict[str, int]:
    if backend.name != "sqlite":
        return {}
    (count,) = await backend.fetch("PRAGMA page_count")
    (free,) = await backend.fetch("PRAGMA freelist_count")
    return {**count, **free}


async def test_an_existing_database_without_incremental_vacuum_still_prunes(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    """Created before retention was turned on: the pages are freed for reuse, not handed back."""
    async with panel(app_factory, Backend("sqlite", {"trace_db_path": tmp_path / "trace.db"})) as (client, state):
        ids = await fill(client, state, 10)
    async with panel(app_factory, Backend("sqlite", {"trace_db_path": tmp_path / "trace.db"}), **RETAIN) as (
        client,
        state,
    ):
        job = job_of(state)
        job.clock = days_later(2)
        result = await job.run_once()
        assert result.traces == 10 and result.pages_freed == 0
        assert (await verify(client, ids[0]))["reason"] == "pruned"
    backend = Backend("sqlite", {"trace_db_path": tmp_path / "trace.db"})
    assert await backend.fetch("PRAGMA auto_vacuum") == [{"auto_vacuum": 0}]


async def test_pruning_is_off_by_default(app_factory: Callable[..., FastAPI], backend: Backend) -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.trace_retention_days == 0 and defaults.trace_retention_max_mb == 0
    assert defaults.trace_archive_dir is None
    async with panel(app_factory, backend) as (client, state):
        ids = await fill(client, state, 3)
        assert state.retention is None
        assert (await verify(client, ids[0]))["reason"] == "intact"
    if backend.name == "sqlite":  # and a new file keeps SQLite's default, as before
        assert await backend.fetch("PRAGMA auto_vacuum") == [{"auto_vacuum": 0}]


@pytest.mark.parametrize(
    ("flag", "value"),
    [("trace_retention_days", -1), ("trace_retention_max_mb", -0.5), ("trace_retention_interval_sec", 0)],
)
def test_bad_retention_flags_are_refused(flag: str, value: float) -> None:
    with pytest.raises(ValueError, match=flag):
        Settings(_env_file=None, **{flag: value})  # type: ignore[call-arg]
