"""Repositories of routing (SQL lives here): the intent decision cache and the human-review queue.

Both run on SQLite (their own files, ``ORCH_INTENT_CACHE_DB_PATH`` / ``ORCH_INTENT_HITL_DB_PATH``)
or on the shared Postgres database (``ORCH_DATABASE_URL``), with the same SQL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from app.db.connection import Database, Row
from app.db.migrations import Migration, migrate
from app.timefmt import iso_now

CACHE_COMPONENT = "intent_cache"
REVIEW_COMPONENT = "hitl_queue"
PRUNE_EVERY_WRITES = 256  # expired cache rows are deleted every this many writes (and at startup)

CACHE_MIGRATIONS = (
    Migration(
        1,
        "intent decision cache",
        sqlite=(
            "CREATE TABLE IF NOT EXISTS intent_cache (policy_hash TEXT NOT NULL, signature TEXT NOT NULL,"
            " decision_json TEXT NOT NULL, created_at TEXT NOT NULL, expires_at REAL NOT NULL,"
            " PRIMARY KEY (policy_hash, signature))",
            "CREATE INDEX IF NOT EXISTS intent_cache_expiry ON intent_cache (expires_at)",
        ),
        postgres=(
            "CREATE TABLE IF NOT EXISTS intent_cache (policy_hash TEXT NOT NULL, signature TEXT NOT NULL,"
            " decision_json TEXT NOT NULL, created_at TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL,"
            " PRIMARY KEY (policy_hash, signature))",
            "CREATE INDEX IF NOT EXISTS intent_cache_expiry ON intent_cache (expires_at)",
        ),
    ),
)

_REVIEW_COLUMNS = (
    " id TEXT PRIMARY KEY, created_at TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,"
    " principal TEXT NOT NULL, trace_id TEXT NOT NULL, policy_hash TEXT NOT NULL, signature TEXT NOT NULL,"
    " proposed_route TEXT NOT NULL, proposal_json TEXT NOT NULL, message TEXT NOT NULL,"
    " resolution TEXT, resolved_by TEXT, resolved_at TEXT, note TEXT"
)
REVIEW_MIGRATIONS = (
    Migration(
        1,
        "human-review queue",
        sqlite=(
            f"CREATE TABLE IF NOT EXISTS hitl_queue ({_REVIEW_COLUMNS})",
            "CREATE INDEX IF NOT EXISTS hitl_queue_by_status ON hitl_queue (status, created_at)",
        ),
        postgres=(
            f"CREATE TABLE IF NOT EXISTS hitl_queue ({_REVIEW_COLUMNS})",
            "CREATE INDEX IF NOT EXISTS hitl_queue_by_status ON hitl_queue (status, created_at)",
        ),
    ),
)

REVIEW_STATUSES = ("pending", "resolved", "rejected")


class IntentCacheStore:
    """Earlier routing decisions by (policy hash, input signature), each with an expiry time."""

    def __init__(self, db: Database, *, ttl_seconds: float) -> None:
        self.db = db
        self.ttl_seconds = ttl_seconds
        self._writes = 0

    async def migrate(self) -> None:
        await migrate(self.db, CACHE_COMPONENT, CACHE_MIGRATIONS)
        await self.prune_expired()

    async def get(self, policy_hash: str, signature: str) -> dict[str, Any] | None:
        row = await self.db.fetch_one(
            "SELECT decision_json FROM intent_cache WHERE policy_hash = $1 AND signature = $2 AND expires_at > $3",
            policy_hash,
            signature,
            time.time(),
        )
        if row is None:
            return None
        value: dict[str, Any] = orjson.loads(row["decision_json"])
        return value

    async def put(self, policy_hash: str, signature: str, decision: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO intent_cache (policy_hash, signature, decision_json, created_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (policy_hash, signature) DO UPDATE SET"
            " decision_json = excluded.decision_json, created_at = excluded.created_at,"
            " expires_at = excluded.expires_at",
            policy_hash,
            signature,
            orjson.dumps(decision).decode(),
            iso_now(),
            time.time() + self.ttl_seconds,
        )
        self._writes += 1
        if self._writes % PRUNE_EVERY_WRITES == 0:
            await self.prune_expired()

    async def prune_expired(self) -> int:
        return await self.db.execute("DELETE FROM intent_cache WHERE expires_at <= $1", time.time())

    async def count(self) -> int:
        row = await self.db.fetch_one("SELECT COUNT(*) AS n FROM intent_cache")
        return int(row["n"]) if row else 0


@dataclass(frozen=True, slots=True)
class ReviewItem:
    id: str
    created_at: str
    status: str
    reason: str
    principal: str
    trace_id: str
    policy_hash: str
    signature: str
    proposed_route: str
    proposal: dict[str, Any]
    message: str
    resolution: str | None = None
    resolved_by: str | None = None
    resolved_at: str | None = None
    note: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> ReviewItem:
        values = dict(row)
        values["proposal"] = orjson.loads(values.pop("proposal_json"))
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "review",
            "created_at": self.created_at,
            "status": self.status,
            "reason": self.reason,
            "principal": self.principal,
            "request_id": self.trace_id,
            "policy_hash": self.policy_hash,
            "proposed_route": self.proposed_route,
            "proposal": self.proposal,
            "message": self.message,
            "resolution": self.resolution,
            "resolved_by": self.resolved_by,
            "resolved_at": self.resolved_at,
            "note": self.note,
        }


class ReviewStore:
    """The human-review queue: requests the router would not decide alone."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def migrate(self) -> None:
        await migrate(self.db, REVIEW_COMPONENT, REVIEW_MIGRATIONS)

    async def enqueue(self, item: ReviewItem) -> None:
        await self.db.execute(
            "INSERT INTO hitl_queue (id, created_at, status, reason, principal, trace_id, policy_hash, signature,"
            " proposed_route, proposal_json, message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            item.id,
            item.created_at,
            item.status,
            item.reason,
            item.principal,
            item.trace_id,
            item.policy_hash,
            item.signature,
            item.proposed_route,
            orjson.dumps(item.proposal).decode(),
            item.message,
        )

    async def get(self, item_id: str) -> ReviewItem | None:
        row = await self.db.fetch_one("SELECT * FROM hitl_queue WHERE id = $1", item_id)
        return ReviewItem.from_row(row) if row else None

    async def list(self, *, status: str | None, limit: int) -> list[ReviewItem]:
        if status is None:
            rows = await self.db.fetch_all("SELECT * FROM hitl_queue ORDER BY created_at, id LIMIT $1", limit)
        else:
            rows = await self.db.fetch_all(
                "SELECT * FROM hitl_queue WHERE status = $1 ORDER BY created_at, id LIMIT $2", status, limit
            )
        return [ReviewItem.from_row(row) for row in rows]

    async def resolve(self, item_id: str, *, status: str, resolution: str, resolved_by: str, note: str | None) -> bool:
        """Close a pending item; False if it is not pending (any more). Atomic: one conditional UPDATE."""
        changed = await self.db.execute(
            "UPDATE hitl_queue SET status = $1, resolution = $2, resolved_by = $3, resolved_at = $4, note = $5"
            " WHERE id = $6 AND status = 'pending'",
            status,
            resolution,
            resolved_by,
            iso_now(),
            note,
            item_id,
        )
        return changed == 1
