"""Starting the real service against a Postgres that accepts the connection but never answers
(the real server behind a proxy that forwards nothing): it gives up within ORCH_DB_TIMEOUT_SEC
with one line naming the flags, exit status 3, as for a database that refuses."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.e2e.server import ENTRY_POINTS, LiveServer, entry_command
from tests.fakes.tcp_proxy import tcp_proxy

pytestmark = pytest.mark.e2e

BOUND = 2  # ORCH_DB_TIMEOUT_SEC


@pytest.mark.parametrize("entry", ENTRY_POINTS)
async def test_startup_against_a_hung_database_gives_up_with_one_clear_line(
    tmp_path: Path, postgres_url: str, entry: str
) -> None:
    async with tcp_proxy("127.0.0.1", 5432) as proxy:
        proxy.freeze()
        url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        command = entry_command(entry)
        env = LiveServer(tmp_path, {"ORCH_DATABASE_URL": url, "ORCH_DB_TIMEOUT_SEC": str(BOUND)}, command).env
        start = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *command, cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        took = time.monotonic() - start
        assert proxy.connections >= 1  # it did reach the (hung) server
    output = stderr.decode()
    assert process.returncode == 3, output
    assert "Traceback" not in output + stdout.decode()
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines == [
        "orchestrators: cannot open the Postgres database (ORCH_DATABASE_URL): "
        f"no answer within ORCH_DB_TIMEOUT_SEC={BOUND} s"
    ], output
    assert took < BOUND + 10, took  # the bound plus the interpreter's start, not asyncpg's 60 s
