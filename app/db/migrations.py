"""Schema migrations that run at startup, are safe to run twice, and are safe with several
replicas starting at once (Postgres: one advisory lock for all stores; SQLite: BEGIN IMMEDIATE)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from app.db.connection import Database, serialise

_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL,"
    " PRIMARY KEY (component, version))"
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step of a component (a store), in both dialects."""

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer version of the service than this one."""


async def migrate(db: Database, component: str, migrations: Sequence[Migration]) -> list[int]:
    """Apply the component's pending migrations in one transaction; return the versions applied.

    A database that records a version this code does not know was migrated by a newer release:
    running on it could misread or damage what that release stores, so startup stops
    (:class:`SchemaTooNew`) instead.
    """
    applied_now: list[int] = []
    async with db.transaction() as tx:
        # One lock for every store, not one per store: stores that migrate at once (replicas with
        # different features on) would otherwise all run CREATE TABLE IF NOT EXISTS
        # schema_migrations together, which Postgres does not make safe against itself.
        await serialise(tx, "orch-migrate")
        await tx.execute(_CREATE_TABLE)
        rows = await tx.fetch_all("SELECT version FROM schema_migrations WHERE component = $1", component)
        done = {row["version"] for row in rows}
        known = max((m.version for m in migrations), default=0)
        if done and max(done) > known:
            raise SchemaTooNew(
                f"the {component} tables were migrated by a newer version of the service (schema version "
                f"{max(done)}; this version knows up to {known}): run that version, or restore the backup "
                "taken before the upgrade (docs/operations.md, Upgrades)"
            )
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in done:
                continue
            for statement in migration.sqlite if db.dialect == "sqlite" else migration.postgres:
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO schema_migrations (component, version, name, applied_at) VALUES ($1, $2, $3, $4)",
                component,
                migration.version,
                migration.name,
                datetime.now(UTC).isoformat(),
            )
            applied_now.append(migration.version)
    return applied_now
