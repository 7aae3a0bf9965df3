"""The memory repository (SQL lives here): ``memory_candidates`` on SQLite or Postgres.

Columns are the original's (``id``, ``user_id_hash``, ``conversation_id``, ``scope``, ``content``,
``content_hash``, ``created_at``, ``last_seen_at``, ``ttl_minutes``, ``expires_at``, ``source``,
``passes``) plus a numeric expiry (``expires_ts``, seconds since the epoch) that every read filters
on, so an expired entry is never returned even before the purge deletes it. Recall ranks with
SQLite FTS5 (``memory_fts``, kept in step by triggers) or Postgres full-text search (a generated
``tsvector`` column with a GIN index).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any

from app.db.connection import Database, Executor, Row, serialise
from app.db.migrations import Migration, migrate
from app.ids import new_uuid
from app.timefmt import iso_utc

COMPONENT = "memory_candidates"
GLOBAL_SCOPE = "global"
CONVERSATION_SCOPE = "conversation:"  # + the X-Conversation-ID

_COLUMNS = (
    "id TEXT PRIMARY KEY, user_id_hash TEXT NOT NULL, conversation_id TEXT, scope TEXT NOT NULL,"
    " content TEXT NOT NULL, content_hash TEXT NOT NULL, created_at TEXT NOT NULL, last_seen_at TEXT NOT NULL,"
    " ttl_minutes INTEGER NOT NULL, expires_at TEXT NOT NULL, source TEXT, passes INTEGER NOT NULL DEFAULT 0"
)
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS memory_by_owner ON memory_candidates (user_id_hash, created_at, id)",
    "CREATE INDEX IF NOT EXISTS memory_by_content ON memory_candidates (user_id_hash, scope, content_hash)",
    "CREATE INDEX IF NOT EXISTS memory_by_expiry ON memory_candidates (expires_ts)",
)
MIGRATIONS = (
    Migration(
        1,
        "memory candidates with full-text recall",
        sqlite=(
            f"CREATE TABLE IF NOT EXISTS memory_candidates ({_COLUMNS}, expires_ts REAL NOT NULL)",
            *_INDEXES,
            "CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts USING fts5(content, content='memory_candidates',"
            " content_rowid='rowid', tokenize='porter unicode61 remove_diacritics 2')",
            "CREATE TRIGGER IF NOT EXISTS memory_fts_insert AFTER INSERT ON memory_candidates BEGIN"
            " INSERT INTO memory_fts (rowid, content) VALUES (new.rowid, new.content); END",
            "CREATE TRIGGER IF NOT EXISTS memory_fts_delete AFTER DELETE ON memory_candidates BEGIN"
            " INSERT INTO memory_fts (memory_fts, rowid, content) VALUES ('delete', old.rowid, old.content); END",
            "CREATE TRIGGER IF NOT EXISTS memory_fts_update AFTER UPDATE OF content ON memory_candidates BEGIN"
            " INSERT INTO memory_fts (memory_fts, rowid, content) VALUES ('delete', old.rowid, old.content);"
            " INSERT INTO memory_fts (rowid, content) VALUES (new.rowid, new.content); END",
        ),
        postgres=(
            f"CREATE TABLE IF NOT EXISTS memory_candidates ({_COLUMNS}, expires_ts DOUBLE PRECISION NOT NULL,"
            " content_tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED)",
            *_INDEXES,
            "CREATE INDEX IF NOT EXISTS memory_fts ON memory_candidates USING GIN (content_tsv)",
        ),
    ),
)

_PUBLIC = "id, conversation_id, scope, content, created_at, last_seen_at, ttl_minutes, expires_at, source, passes"
# Recall query terms: words of letters and digits; short and very common words carry no signal.
_TERM = re.compile(r"[^\W_]+")
_MIN_TERM_CHARS = 3
MAX_QUERY_TERMS = 16  # a long message is searched by its first distinct words, not all of them
_STOP_WORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "are",
        "but",
        "not",
        "you",
        "all",
        "any",
        "can",
        "had",
        "her",
        "was",
        "one",
        "our",
        "out",
        "has",
        "him",
        "his",
        "how",
        "its",
        "may",
        "new",
        "now",
        "old",
        "see",
        "two",
        "who",
        "did",
        "get",
        "let",
        "say",
        "she",
        "too",
        "use",
        "what",
        "when",
        "where",
        "which",
        "while",
        "with",
        "would",
        "could",
        "should",
        "this",
        "that",
        "these",
        "those",
        "there",
        "their",
        "they",
        "them",
        "then",
        "than",
        "from",
        "have",
        "into",
        "just",
        "like",
        "more",
        "most",
        "much",
        "must",
        "only",
        "other",
        "over",
        "some",
        "such",
        "very",
        "will",
        "your",
        "about",
        "after",
        "again",
        "also",
        "because",
        "been",
        "before",
        "being",
        "both",
        "does",
        "doing",
        "each",
        "few",
        "here",
        "ask",
        "asked",
        "tell",
        "told",
        "remember",
        "please",
        "know",
    ]
)


def owner_hash(principal_id: str) -> str:
    """The scope key of a principal (the validated principal's id, never a raw header)."""
    return hashlib.sha256(f"memory-owner:{principal_id}".encode()).hexdigest()[:32]


def scope_for(conversation_id: str | None) -> str:
    return CONVERSATION_SCOPE + conversation_id if conversation_id else GLOBAL_SCOPE


def recall_terms(text: str) -> list[str]:
    """The distinct, meaningful words of ``text`` (lowercase), at most :data:`MAX_QUERY_TERMS`."""
    terms: list[str] = []
    for word in _TERM.findall(text.lower()):
        if len(word) >= _MIN_TERM_CHARS and word not in _STOP_WORDS and word not in terms:
            terms.append(word)
            if len(terms) == MAX_QUERY_TERMS:
                break
    return terms


@dataclass(frozen=True, slots=True)
class StoredMemory:
    """A memory as the caller may see it."""

    id: str
    conversation_id: str | None
    scope: str
    content: str
    created_at: str
    last_seen_at: str
    ttl_minutes: int
    expires_at: str
    source: str | None
    passes: int

    @classmethod
    def from_row(cls, row: Row) -> StoredMemory:
        return cls(**{key: row[key] for key in cls.__slots__})

    def as_dict(self) -> dict[str, Any]:
        return {"object": "memory", **{key: getattr(self, key) for key in self.__slots__}}


@dataclass(frozen=True, slots=True)
class CaptureResult:
    id: str
    deduped: bool


class MemoryStore:
    """Memories of every principal; each method is scoped to one owner (``user_id_hash``)."""

    def __init__(self, db: Database, *, dedupe_window_seconds: float) -> None:
        self.db = db
        self.dedupe_window_seconds = dedupe_window_seconds

    async def migrate(self) -> None:
        await migrate(self.db, COMPONENT, MIGRATIONS)
        if self.db.dialect == "sqlite":
            # Deleted rows are overwritten with zeros, not left in free pages (the right to erase).
            await self.db.execute("PRAGMA secure_delete = ON")

    async def _erase(self, deleted: int) -> int:
        """After a deletion on SQLite, make it physical: merge the full-text index (FTS5 keeps a
        deleted entry's tokens in old segments until a merge) and checkpoint the WAL (which still
        holds the old pages). Deletions are rare; this costs milliseconds at 10,000 memories."""
        if deleted > 0 and self.db.dialect == "sqlite":
            await self.db.execute("INSERT INTO memory_fts (memory_fts) VALUES ('optimize')")
            await self.db.fetch_one("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    async def capture(
        self,
        *,
        owner: str,
        conversation_id: str | None,
        content: str,
        digest: str,
        ttl_minutes: int,
        source: str,
    ) -> CaptureResult:
        """Insert ``content``, or refresh the same content seen within the dedupe window."""
        now = time.time()
        expires = now + ttl_minutes * 60
        scope = scope_for(conversation_id)
        async with self.db.transaction() as tx:
            # Two requests with the same content at once must not both insert.
            await serialise(tx, "memory", owner, scope, digest)
            row = await tx.fetch_one(
                "SELECT id FROM memory_candidates WHERE user_id_hash = $1 AND scope = $2 AND content_hash = $3"
                " AND expires_ts > $4 AND last_seen_at >= $5 ORDER BY last_seen_at DESC LIMIT 1",
                owner,
                scope,
                digest,
                now,
                iso_utc(now - self.dedupe_window_seconds),
            )
            if row is not None:
                await tx.execute(
                    "UPDATE memory_candidates SET last_seen_at = $1, passes = passes + 1, expires_at = $2,"
                    " expires_ts = $3, ttl_minutes = $4 WHERE id = $5",
                    iso_utc(now),
                    iso_utc(expires),
                    expires,
                    ttl_minutes,
                    row["id"],
                )
                return CaptureResult(str(row["id"]), deduped=True)
            memory_id = new_uuid()
            await tx.execute(
                "INSERT INTO memory_candidates (id, user_id_hash, conversation_id, scope, content, content_hash,"
                " created_at, last_seen_at, ttl_minutes, expires_at, source, passes, expires_ts)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, 1, $11)",
                memory_id,
                owner,
                conversation_id,
                scope,
                content,
                digest,
                iso_utc(now),
                ttl_minutes,
                iso_utc(expires),
                source,
                expires,
            )
            return CaptureResult(memory_id, deduped=False)

    async def get(self, owner: str, memory_id: str) -> StoredMemory | None:
        row = await self.db.fetch_one(
            f"SELECT {_PUBLIC} FROM memory_candidates WHERE id = $1 AND user_id_hash = $2 AND expires_ts > $3",  # noqa: S608
            memory_id,
            owner,
            time.time(),
        )
        return StoredMemory.from_row(row) if row else None

    async def page(self, owner: str, *, limit: int, after: str | None = None) -> tuple[list[StoredMemory], bool]:
        """The owner's unexpired memories, oldest first, from after the ``after`` id; and whether more follow."""
        now = time.time()
        if after is None:
            rows = await self.db.fetch_all(
                f"SELECT {_PUBLIC} FROM memory_candidates WHERE user_id_hash = $1 AND expires_ts > $2"  # noqa: S608
                " ORDER BY created_at, id LIMIT $3",
                owner,
                now,
                limit + 1,
            )
        else:
            rows = await self.db.fetch_all(
                f"SELECT {_PUBLIC} FROM memory_candidates m WHERE user_id_hash = $1 AND expires_ts > $2"  # noqa: S608
                " AND EXISTS (SELECT 1 FROM memory_candidates c WHERE c.id = $3 AND c.user_id_hash = $1"
                " AND (m.created_at > c.created_at OR (m.created_at = c.created_at AND m.id > c.id)))"
                " ORDER BY created_at, id LIMIT $4",
                owner,
                now,
                after,
                limit + 1,
            )
        return [StoredMemory.from_row(row) for row in rows[:limit]], len(rows) > limit

    async def exists(self, owner: str, memory_id: str) -> bool:
        row = await self.db.fetch_one(
            "SELECT 1 AS found FROM memory_candidates WHERE id = $1 AND user_id_hash = $2", memory_id, owner
        )
        return row is not None

    async def delete(self, owner: str, memory_id: str) -> bool:
        """Really delete one of the owner's memories (expired or not); False if there is none."""
        sql = "DELETE FROM memory_candidates WHERE id = $1 AND user_id_hash = $2"
        return await self._erase(await self.db.execute(sql, memory_id, owner)) > 0

    async def delete_all(self, owner: str) -> int:
        sql = "DELETE FROM memory_candidates WHERE user_id_hash = $1"
        return await self._erase(await self.db.execute(sql, owner))

    async def purge_expired(self) -> int:
        sql = "DELETE FROM memory_candidates WHERE expires_ts <= $1"
        return await self._erase(await self.db.execute(sql, time.time()))

    async def count(self, owner: str | None = None) -> int:
        if owner is None:
            row = await self.db.fetch_one("SELECT COUNT(*) AS n FROM memory_candidates")
        else:
            row = await self.db.fetch_one("SELECT COUNT(*) AS n FROM memory_candidates WHERE user_id_hash = $1", owner)
        return int(row["n"]) if row else 0

    async def recall(self, owner: str, *, conversation_id: str | None, query: str, limit: int) -> list[StoredMemory]:
        """The owner's unexpired memories most relevant to ``query`` (global ones and this
        conversation's), best first; none when the query has no searchable words."""
        terms = recall_terms(query)
        if not terms:
            return []
        scopes = (GLOBAL_SCOPE, scope_for(conversation_id))
        return await _recall(self.db, owner, scopes, terms, limit)


async def _recall(
    db: Executor, owner: str, scopes: tuple[str, str], terms: list[str], limit: int
) -> list[StoredMemory]:
    columns = ", ".join(f"m.{name}" for name in _PUBLIC.split(", "))
    if db.dialect == "sqlite":
        # Each term quoted: FTS5 query syntax in the user's words is taken literally.
        match = " OR ".join(f'"{term}"' for term in terms)
        rows = await db.fetch_all(
            f"SELECT {columns} FROM memory_fts JOIN memory_candidates m ON m.rowid = memory_fts.rowid"  # noqa: S608
            " WHERE memory_fts MATCH $1 AND m.user_id_hash = $2 AND m.scope IN ($3, $4) AND m.expires_ts > $5"
            " ORDER BY bm25(memory_fts), m.created_at DESC LIMIT $6",
            match,
            owner,
            *scopes,
            time.time(),
            limit,
        )
    else:
        # Terms are letters and digits only, so the tsquery cannot be malformed.
        tsquery = " | ".join(terms)
        rows = await db.fetch_all(
            f"SELECT {columns} FROM memory_candidates m, to_tsquery('english', $1) q"  # noqa: S608
            " WHERE m.content_tsv @@ q AND m.user_id_hash = $2 AND m.scope IN ($3, $4) AND m.expires_ts > $5"
            " ORDER BY ts_rank(m.content_tsv, q) DESC, m.created_at DESC LIMIT $6",
            tsquery,
            owner,
            *scopes,
            time.time(),
            limit,
        )
    return [StoredMemory.from_row(row) for row in rows]
