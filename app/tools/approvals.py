"""Approvals: single-use permissions to run one tool with one set of arguments (SQL lives here).

Lifecycle (the stored ``status``; ``expired`` is derived from ``expires_at``):

* ``pending``  - a caller's call needed approval; the request waits for a person.
* ``approved`` - a person approved it (or issued it directly with ``POST /v1/tools/approve``):
  usable exactly once, until ``expires_at``.
* ``consumed`` - it was used; it never works again.
* ``denied``   - a person refused it.
* ``expired``  - pending or approved, past ``expires_at``.

Consuming is ONE conditional ``UPDATE ... WHERE status = 'approved' AND expires_at > now ...
RETURNING``: the database decides which of any number of concurrent executions wins (exactly
one), on SQLite and on Postgres, across processes and replicas. Only when it matches no row is
the row read to say why (``already_consumed``, ``args_hash_mismatch``, ``expired`` ...).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from app.db.connection import Database, Executor, Row, serialise
from app.db.migrations import Migration, migrate
from app.scrub import cap_text, scrub
from app.timefmt import iso_utc

COMPONENT = "tool_approvals"

PENDING, APPROVED, CONSUMED, DENIED, EXPIRED = "pending", "approved", "consumed", "denied", "expired"
STATUSES = (PENDING, APPROVED, CONSUMED, DENIED, EXPIRED)
MAX_PENDING_PER_PRINCIPAL = 50  # open requests one caller may have waiting for a person
ARGS_PREVIEW_MAX_CHARS = 20_000  # what a reviewer sees of an issued call's arguments (the hash binds them all)
# A caller's request is shown whole or not at all: room for the longest python_exec code (100,000
# characters) even when JSON escaping multiplies it several times.
ARGS_REVIEW_MAX_CHARS = 1_048_576
RETENTION_SECONDS = 30 * 86_400  # finished approvals older than this are purged at startup

_COLUMNS = (
    "approval_id, tool_name, args_hash, args_json, status, created_at, expires_at, requested_by,"
    " request_trace_id, decided_by, decided_at, decision_reason, consumed_by, consumed_at, consume_trace_id"
)

# The single statement that decides who gets to use a token.
_CONSUME = (
    "UPDATE tool_approvals SET status = 'consumed', consumed_at = $5, consumed_by = $4, consume_trace_id = $6"  # noqa: S608
    " WHERE approval_id = $1 AND status = 'approved' AND tool_name = $2 AND args_hash = $3 AND expires_at > $5"
    " AND (requested_by IS NULL OR requested_by = $4) RETURNING " + _COLUMNS
)
# The same for an approved request the caller raised itself (no token presented).
_CONSUME_OWN = (
    "UPDATE tool_approvals SET status = 'consumed', consumed_at = $4, consumed_by = $3, consume_trace_id = $5"  # noqa: S608
    " WHERE approval_id = (SELECT approval_id FROM tool_approvals WHERE requested_by = $3 AND tool_name = $1"
    " AND args_hash = $2 AND status = 'approved' AND expires_at > $4 ORDER BY created_at LIMIT 1)"
    " AND status = 'approved' RETURNING " + _COLUMNS
)

MIGRATIONS = (
    Migration(
        1,
        "tool approvals",
        sqlite=(
            "CREATE TABLE IF NOT EXISTS tool_approvals (approval_id TEXT PRIMARY KEY, tool_name TEXT NOT NULL,"
            " args_hash TEXT NOT NULL, args_json TEXT, status TEXT NOT NULL, created_at REAL NOT NULL,"
            " expires_at REAL NOT NULL, requested_by TEXT, request_trace_id TEXT, decided_by TEXT,"
            " decided_at REAL, decision_reason TEXT, consumed_by TEXT, consumed_at REAL, consume_trace_id TEXT)",
            "CREATE INDEX IF NOT EXISTS tool_approvals_by_status ON tool_approvals (status, created_at)",
            "CREATE INDEX IF NOT EXISTS tool_approvals_by_request"
            " ON tool_approvals (requested_by, tool_name, args_hash, status)",
        ),
        postgres=(
            "CREATE TABLE IF NOT EXISTS tool_approvals (approval_id TEXT PRIMARY KEY, tool_name TEXT NOT NULL,"
            " args_hash TEXT NOT NULL, args_json TEXT, status TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,"
            " expires_at DOUBLE PRECISION NOT NULL, requested_by TEXT, request_trace_id TEXT, decided_by TEXT,"
            " decided_at DOUBLE PRECISION, decision_reason TEXT, consumed_by TEXT, consumed_at DOUBLE PRECISION,"
            " consume_trace_id TEXT)",
            "CREATE INDEX IF NOT EXISTS tool_approvals_by_status ON tool_approvals (status, created_at)",
            "CREATE INDEX IF NOT EXISTS tool_approvals_by_request"
            " ON tool_approvals (requested_by, tool_name, args_hash, status)",
        ),
    ),
)


def new_approval_id() -> str:
    """The approval id IS the token: unguessable (192 random bits from the OS)."""
    return "apr_" + secrets.token_urlsafe(24)


def approval_ref(approval_id: str) -> str:
    """A non-secret reference to an approval for receipts (the id itself is the token)."""
    return hashlib.sha256(approval_id.encode()).hexdigest()[:16]


def args_preview(args: dict[str, Any]) -> str:
    """The arguments as a reviewer sees them: credentials redacted, capped. (For calls an approver
    issues with arguments of their own; a caller's request is shown exactly, see reviewable_args.)"""
    text = orjson.dumps(scrub(args, pii=False), option=orjson.OPT_SORT_KEYS).decode()
    return cap_text(text, ARGS_PREVIEW_MAX_CHARS)[0]


def reviewable_args(args: dict[str, Any]) -> str:
    """The arguments of a caller's request exactly as they will run, for the person who approves
    them; raise NotReviewable when they cannot be shown whole. A person approves exactly what runs:
    redacting or cutting anything out of what they see would let a caller hide code from them
    (text between two private-key markers, say), while the approval binds the real arguments."""
    if scrub(args, pii=False) is not args:
        raise NotReviewable(
            "credentials",
            "The arguments contain text that looks like a credential: it cannot be shown to the person "
            "who approves, so the call cannot be approved. Pass secrets to tools some other way.",
        )
    text = orjson.dumps(args, option=orjson.OPT_SORT_KEYS).decode()
    if len(text) > ARGS_REVIEW_MAX_CHARS:
        raise NotReviewable(
            "too_long",
            f"The arguments are {len(text)} characters as JSON; a person reviews at most {ARGS_REVIEW_MAX_CHARS}.",
        )
    return text


def _shown(args_json: str | None) -> Any:
    """Stored arguments for the reviewer; a preview capped mid-JSON (an issued call's long
    arguments) is shown as its text rather than failing the listing."""
    if not args_json:
        return None
    try:
        return orjson.loads(args_json)
    except orjson.JSONDecodeError:
        return args_json


@dataclass(slots=True)
class Approval:
    approval_id: str
    tool: str
    args_hash: str
    status: str  # effective: expired when past expires_at and still pending/approved
    created_at: float
    expires_at: float
    requested_by: str | None = None
    request_trace_id: str | None = None
    args_json: str | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    consumed_by: str | None = None
    consumed_at: float | None = None

    @classmethod
    def from_row(cls, row: Row, now: float) -> Approval:
        status = row["status"]
        if status in (PENDING, APPROVED) and row["expires_at"] <= now:
            status = EXPIRED
        return cls(
            approval_id=row["approval_id"],
            tool=row["tool_name"],
            args_hash=row["args_hash"],
            status=status,
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            requested_by=row["requested_by"],
            request_trace_id=row["request_trace_id"],
            args_json=row["args_json"],
            decided_by=row["decided_by"],
            decision_reason=row["decision_reason"],
            consumed_by=row["consumed_by"],
            consumed_at=row["consumed_at"],
        )

    def shows_what_runs(self) -> bool:
        """Whether the arguments a reviewer is shown are exactly those the approval binds. Always
        so for requests raised by this version; not for one an older version (before 9030ad7)
        stored redacted or cut for review and left pending. (A request stores the canonical JSON
        that ``args_hash`` hashes: see reviewable_args and tools.registry.args_hash.)"""
        return self.args_json is not None and hashlib.sha256(self.args_json.encode()).hexdigest() == self.args_hash

    def issued(self) -> dict[str, Any]:
        """The fields of ``POST /v1/tools/approve`` (the original's response)."""
        return {
            "approval_id": self.approval_id,
            "tool": self.tool,
            "args_hash": self.args_hash,
            "created_at": iso_utc(self.created_at),
            "expires_at": iso_utc(self.expires_at),
            "status": self.status,
        }

    def listed(self) -> dict[str, Any]:
        """What an approver sees when reviewing."""
        item = self.issued()
        item.update(
            {
                "args": _shown(self.args_json),
                "requested_by": self.requested_by,
                "request_trace_id": self.request_trace_id,
                "decided_by": self.decided_by,
                "decision_reason": self.decision_reason,
                "consumed_by": self.consumed_by,
                "consumed_at": iso_utc(self.consumed_at) if self.consumed_at else None,
            }
        )
        return item


@dataclass(frozen=True, slots=True)
class Consumption:
    """The outcome of presenting a token: ``ok``, or the reason it was refused."""

    ok: bool
    reason: str  # approved | unknown_approval | already_consumed | approval_denied | approval_pending
    #              | tool_mismatch | args_hash_mismatch | expired | principal_mismatch
    approval: Approval | None = None


class ApprovalConflict(Exception):
    """The approval is not in a state that allows this (e.g. approving a consumed one)."""

    def __init__(self, approval: Approval) -> None:
        super().__init__(approval.status)
        self.approval = approval


class TooManyPending(Exception):
    pass


class NotReviewable(Exception):
    """A caller's call whose arguments cannot be shown whole to the person who would approve them."""

    def __init__(self, why: str, detail: str) -> None:
        super().__init__(detail)
        self.why = why
        self.detail = detail


class ApprovalStore:
    """The ``tool_approvals`` table on SQLite or Postgres."""

    def __init__(self, db: Database, *, default_ttl: int) -> None:
        self.db = db
        self.default_ttl = default_ttl

    async def migrate(self) -> None:
        await migrate(self.db, COMPONENT, MIGRATIONS)
        await self.db.execute(
            "DELETE FROM tool_approvals WHERE created_at < $1"
            " AND (status IN ('consumed', 'denied') OR expires_at < $1)",
            time.time() - RETENTION_SECONDS,
        )

    async def get(self, approval_id: str) -> Approval | None:
        row = await self.db.fetch_one(f"SELECT {_COLUMNS} FROM tool_approvals WHERE approval_id = $1", approval_id)  # noqa: S608
        return Approval.from_row(row, time.time()) if row else None

    async def _insert(self, approval: Approval, args_json: str | None, executor: Executor | None = None) -> Approval:
        await (executor or self.db).execute(
            "INSERT INTO tool_approvals (approval_id, tool_name, args_hash, args_json, status, created_at,"
            " expires_at, requested_by, request_trace_id, decided_by, decided_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            approval.approval_id,
            approval.tool,
            approval.args_hash,
            args_json,
            approval.status,
            approval.created_at,
            approval.expires_at,
            approval.requested_by,
            approval.request_trace_id,
            approval.decided_by,
            approval.created_at if approval.decided_by else None,
        )
        approval.args_json = args_json
        return approval

    async def issue(
        self, *, tool: str, args_hash: str, args: dict[str, Any], approver: str, ttl: int | None = None
    ) -> Approval:
        """A person approves a call directly: an ``approved`` token, usable once by anyone who holds it."""
        now = time.time()
        approval = Approval(
            new_approval_id(), tool, args_hash, APPROVED, now, now + (ttl or self.default_ttl), decided_by=approver
        )
        return await self._insert(approval, args_preview(args))

    async def request(
        self, *, tool: str, args_hash: str, args: dict[str, Any], principal: str, trace_id: str | None
    ) -> Approval:
        """A call needs approval: the open request of this caller for these exact arguments, or a new one.
        Raises NotReviewable when the arguments cannot be shown whole to the person who approves."""
        shown = reviewable_args(args)
        async with self.db.transaction() as tx:
            # Check, then insert, atomically: concurrent requests of one caller (on any replica)
            # must neither open the same request twice nor get past the cap together.
            await serialise(tx, "tool_approvals", principal)
            now = time.time()
            row = await tx.fetch_one(
                f"SELECT {_COLUMNS} FROM tool_approvals WHERE requested_by = $1 AND tool_name = $2"  # noqa: S608
                " AND args_hash = $3 AND status = 'pending' AND expires_at > $4 ORDER BY created_at LIMIT 1",
                principal,
                tool,
                args_hash,
                now,
            )
            if row is not None:
                return Approval.from_row(row, now)
            count = await tx.fetch_one(
                "SELECT COUNT(*) AS n FROM tool_approvals WHERE requested_by = $1 AND status = 'pending'"
                " AND expires_at > $2",
                principal,
                now,
            )
            if count is not None and int(count["n"]) >= MAX_PENDING_PER_PRINCIPAL:
                raise TooManyPending
            approval = Approval(
                new_approval_id(),
                tool,
                args_hash,
                PENDING,
                now,
                now + self.default_ttl,
                requested_by=principal,
                request_trace_id=trace_id,
            )
            return await self._insert(approval, shown, tx)

    async def _decide(self, approval_id: str, sql: str, *args: Any) -> Approval:
        now = time.time()
        row = await self.db.fetch_one(sql + f" RETURNING {_COLUMNS}", approval_id, now, *args)
        if row is not None:
            return Approval.from_row(row, now)
        current = await self.get(approval_id)
        if current is None:
            raise KeyError(approval_id)
        raise ApprovalConflict(current)

    async def approve(self, approval_id: str, *, approver: str, ttl: int | None = None) -> Approval:
        """pending -> approved, valid for ``ttl`` seconds from now. Raises NotReviewable for a
        request whose stored arguments are not what would run (a request can only be denied)."""
        current = await self.get(approval_id)
        if current is not None and current.status == PENDING and not current.shows_what_runs():
            # A request's arguments never change once stored, so checking before the UPDATE is safe.
            raise NotReviewable(
                "not_as_shown",
                "The arguments shown for this request are not exactly the ones it would run (it was "
                "stored by an older version, which redacted or cut them for review), so it cannot be "
                "approved: deny it, and the caller can ask again.",
            )
        return await self._decide(
            approval_id,
            "UPDATE tool_approvals SET status = 'approved', decided_by = $3, decided_at = $2, expires_at = $4"
            " WHERE approval_id = $1 AND status = 'pending' AND expires_at > $2",
            approver,
            time.time() + (ttl or self.default_ttl),
        )

    async def deny(self, approval_id: str, *, approver: str, reason: str | None) -> Approval:
        """pending or approved -> denied."""
        return await self._decide(
            approval_id,
            "UPDATE tool_approvals SET status = 'denied', decided_by = $3, decided_at = $2, decision_reason = $4"
            " WHERE approval_id = $1 AND status IN ('pending', 'approved') AND expires_at > $2",
            approver,
            reason,
        )

    async def consume(
        self, token: str, *, tool: str, args_hash: str, principal: str, trace_id: str | None
    ) -> Consumption:
        """Use ``token`` for this call, atomically: at most one caller ever gets ``ok``."""
        now = time.time()
        row = await self.db.fetch_one(
            _CONSUME,
            token,
            tool,
            args_hash,
            principal,
            now,
            trace_id,
        )
        if row is not None:
            return Consumption(True, "approved", Approval.from_row(row, now))
        current = await self.get(token)
        return Consumption(False, _refusal(current, tool, args_hash, principal), current)

    async def consume_own(self, *, tool: str, args_hash: str, principal: str, trace_id: str | None) -> Approval | None:
        """Use an approved request this caller raised for exactly this call, if there is one.

        The binding is the same as a token's (tool, arguments hash, the requesting principal), so the
        caller does not have to present the id: this is how a tool call from chat goes through once
        a person approved it.
        """
        now = time.time()
        row = await self.db.fetch_one(
            _CONSUME_OWN,
            tool,
            args_hash,
            principal,
            now,
            trace_id,
        )
        return Approval.from_row(row, now) if row is not None else None

    async def list(self, status: str, limit: int) -> list[Approval]:
        now = time.time()
        timed = {
            PENDING: "status = 'pending' AND expires_at > $2",
            APPROVED: "status = 'approved' AND expires_at > $2",
            EXPIRED: "status IN ('pending', 'approved') AND expires_at <= $2",
        }
        untimed = {CONSUMED: "WHERE status = 'consumed'", DENIED: "WHERE status = 'denied'", "all": ""}
        head = f"SELECT {_COLUMNS} FROM tool_approvals "  # noqa: S608 - constant SQL fragments only
        if status in timed:
            sql = head + f"WHERE {timed[status]} ORDER BY created_at DESC LIMIT $1"
            rows = await self.db.fetch_all(sql, limit, now)
        else:
            rows = await self.db.fetch_all(head + f"{untimed[status]} ORDER BY created_at DESC LIMIT $1", limit)
        return [Approval.from_row(row, now) for row in rows]


def _refusal(current: Approval | None, tool: str, args_hash: str, principal: str) -> str:
    if current is None:
        return "unknown_approval"
    if current.status == CONSUMED:
        return "already_consumed"
    if current.status == DENIED:
        return "approval_denied"
    if current.tool != tool:
        return "tool_mismatch"
    if current.args_hash != args_hash:
        return "args_hash_mismatch"
    if current.status == EXPIRED:
        return "expired"
    if current.status == PENDING:
        return "approval_pending"
    if current.requested_by is not None and current.requested_by != principal:
        return "principal_mismatch"
    return "already_consumed"  # it was usable a moment ago: a concurrent execution won
