"""The open databases of one app: a SQLite file per store path, or one Postgres pool for all."""

from __future__ import annotations

from pathlib import Path

from app.db.connection import DEFAULT_TIMEOUT_S, Database, PostgresDatabase, SqliteDatabase, postgres_dsn


class Databases:
    """Opens each database once and closes them all at shutdown.

    With ``database_url`` every store shares one Postgres pool (one schema); otherwise each store
    has its SQLite file (stores configured with the same path share one connection).
    """

    def __init__(
        self, *, database_url: str = "", wal: bool = True, pool_recycle: float = 300, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.database_url = database_url
        self.wal = wal
        self.pool_recycle = pool_recycle
        self.timeout = timeout  # ORCH_DB_TIMEOUT_SEC: the bound of every database call
        self._postgres: PostgresDatabase | None = None
        self._sqlite: dict[Path, SqliteDatabase] = {}

    @property
    def dialect(self) -> str:
        return "postgres" if self.database_url else "sqlite"

    async def get(self, sqlite_path: Path) -> Database:
        if self.database_url:
            if self._postgres is None:
                self._postgres = await PostgresDatabase(
                    postgres_dsn(self.database_url), recycle_seconds=self.pool_recycle, timeout=self.timeout
                ).open()
            return self._postgres
        key = sqlite_path  # absolute: Settings resolves relative paths against the cwd at load
        if key not in self._sqlite:
            self._sqlite[key] = await SqliteDatabase(key, wal=self.wal, timeout=self.timeout).open()
        return self._sqlite[key]

    def opened(self) -> list[Database]:
        return [*([self._postgres] if self._postgres else []), *self._sqlite.values()]

    async def close(self) -> None:
        for db in self.opened():
            await db.close()
        self._postgres = None
        self._sqlite.clear()
