"""Migrations of different stores started at once on one new Postgres database (replicas with
different features on, starting together) take turns: CREATE TABLE IF NOT EXISTS is not safe
against itself on Postgres."""

from __future__ import annotations

import asyncio

from app.db.connection import PostgresDatabase
from app.db.migrations import Migration, migrate
from tests.conftest import _psql


def migration(table: str) -> tuple[Migration]:
    statement = f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY)"
    return (Migration(1, table, sqlite=(statement,), postgres=(statement,)),)


async def test_stores_migrating_at_once_on_a_new_postgres_database_take_turns(postgres_url: str) -> None:
    base, _ = postgres_url.rsplit("/", 1)
    for attempt in range(8):
        name = f"{postgres_url.rsplit('/', 1)[1]}_{attempt}"
        _psql(f'CREATE DATABASE "{name}"')
        try:
            databases = [await PostgresDatabase(f"{base}/{name}", recycle_seconds=300).open() for _ in range(4)]
            try:
                results = await asyncio.gather(
                    *(migrate(db, f"store{n}", migration(f"t{n}")) for n, db in enumerate(databases))
                )
                assert results == [[1]] * 4
                rows = await databases[0].fetch_all("SELECT component FROM schema_migrations ORDER BY component")
                assert [row["component"] for row in rows] == ["store0", "store1", "store2", "store3"]
            finally:
                for db in databases:
                    await db.close()
        finally:
            _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
