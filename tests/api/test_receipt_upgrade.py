"""An upgrade in place from a database the version before the receipt log wrote (f4054a5): its
ledger becomes the tree's first leaves, every old receipt still verifies, proves its inclusion
and exports as a v2 bundle the offline verifier accepts, and new receipts join the same log.

The database is `tests/fixtures/receipts/trace-db-f4054a5.sql`: the SQL dump of the trace.db
that version wrote serving 37 chats, 3 streamed chats and a tool call (databases are kept out of
the tree, their dumps are text). On Postgres the same rows are loaded into that version's schema.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import asyncpg
from fastapi import FastAPI

from app.db.connection import PostgresDatabase
from app.db.migrations import migrate
from app.receipts.chain import entry_canonical
from app.receipts.store import COMPONENT, MIGRATIONS
from tests.api.test_receipt_bundles import offline
from tests.api.test_receipts import CHAT, HELLO, panel
from tests.conftest import Backend
from tests.unit.test_merkle import Rfc, rfc_verify_consistency, rfc_verify_inclusion

DUMP = Path(__file__).resolve().parents[1] / "fixtures" / "receipts" / "trace-db-f4054a5.sql"
OLD_TRACES = 41
TABLES = ("traces", "trace_steps", "trace_ledger")


def old_rows(tmp_path: Path) -> dict[str, list[dict[str, object]]]:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(DUMP.read_text())
        connection.row_factory = sqlite3.Row
        return {table: [dict(row) for row in connection.execute(f"SELECT * FROM {table}")] for table in TABLES}


async def seed(backend: Backend, tmp_path: Path) -> None:
    """The old version's database, on the backend under test."""
    if backend.name == "sqlite":
        with sqlite3.connect(backend.settings["trace_db_path"]) as connection:
            connection.executescript(DUMP.read_text())
        return
    db = await PostgresDatabase(backend.url, recycle_seconds=60).open()
    try:
        await migrate(db, COMPONENT, MIGRATIONS[:1])  # the schema that version had
    finally:
        await db.close()
    connection = await asyncpg.connect(backend.url)
    try:
        for table, found in old_rows(tmp_path).items():
            # The steps' id is a serial the new rows continue.
            rows = [{k: v for k, v in row.items() if k != "id"} for row in found] if table == "trace_steps" else found
            columns = list(rows[0])
            await connection.copy_records_to_table(
                table, records=[tuple(r[c] for c in columns) for r in rows], columns=columns
            )
    finally:
        await connection.close()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


async def test_an_old_database_is_upgraded_in_place_and_every_receipt_proves_into_the_log(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    await seed(backend, tmp_path)
    async with panel(app_factory, backend, trust_checkpoint_interval_sec=0.1) as (client, state):
        ledger = (await client.get("/v1/trust/ledger/verify")).json()
        assert ledger["verified"] and ledger["traces_checked"] == OLD_TRACES, ledger
        old = [r for r in await backend.fetch("SELECT * FROM trace_ledger ORDER BY seq")]
        assert len(old) == OLD_TRACES and all(r.get("principal") is None for r in old)  # v1 entries
        rfc = Rfc([entry_canonical(r).encode() for r in old])
        head = (await client.get("/v1/trust/tree")).json()
        assert head["tree_size"] == OLD_TRACES and unb64(head["root_hash"]) == rfc.mth(0, OLD_TRACES)
        for row in (old[0], old[17], old[-1]):
            trace_id = row["trace_id"]
            assert (await client.get(f"/v1/trust/verify/{trace_id}")).json()["verified"]
            proof = (await client.get("/v1/trust/proof/inclusion", params={"trace_id": trace_id})).json()
            index = proof["leaf_index"]
            path = [unb64(p) for p in proof["audit_path"]]
            assert rfc_verify_inclusion(
                index, proof["tree_size"], rfc.mth(index, index + 1), path, rfc.mth(0, proof["tree_size"])
            )
        # New receipts join the same log, as v2 entries, and the old tree is a prefix of the new one.
        for _ in range(5):
            assert (await client.post(CHAT, json=HELLO)).status_code == 200
        await state.tracer.flush()
        rows = await backend.fetch("SELECT * FROM trace_ledger ORDER BY seq")
        assert len(rows) == OLD_TRACES + 5 and all(r["principal"] == "owner" for r in rows[OLD_TRACES:])
        grown = Rfc([entry_canonical(r).encode() for r in rows])
        consistency = (
            await client.get("/v1/trust/proof/consistency", params={"from": OLD_TRACES, "to": len(rows)})
        ).json()
        path = [unb64(p) for p in consistency["proof"]]
        assert rfc_verify_consistency(OLD_TRACES, len(rows), rfc.mth(0, OLD_TRACES), grown.mth(0, len(rows)), path)
        assert (await client.get("/v1/trust/ledger/verify")).json()["verified"]
        # An old receipt exported now is a v2 bundle the offline verifier accepts with the key.
        key = (await client.get("/v1/trust/public-key")).json()["verifier_key"]
        bundle = (await client.get(f"/v1/trust/trace/{old[3]['trace_id']}/export")).json()
    assert bundle["format"] == "orchestrators.receipt.v2"
    file = tmp_path / "old-receipt.json"
    file.write_text(json.dumps(bundle))
    checked = offline(file, "--key", key)
    assert checked.returncode == 0 and checked.stdout.startswith("VERIFIED"), checked.stdout + checked.stderr
    versions = await backend.fetch("SELECT version FROM schema_migrations WHERE component = 'traces' ORDER BY version")
    assert [v["version"] for v in versions] == [1, 2, 3, 4]
