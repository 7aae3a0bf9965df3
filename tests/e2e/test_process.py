"""Starting the service as a user would: entry points, bad configuration, the token, the logs."""

from __future__ import annotations

import json
import socket
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import (
    E2E_TOKEN,
    ENTRY_POINTS,
    ROOT,
    LiveServer,
    entry_command,
    free_port,
    run_to_exit,
    stderr_lines,
)

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ORCH_PORT": "abc"}, "ORCH_PORT='abc'"),
        ({"ORCH_RATE_LIMIT": "abc"}, "ORCH_RATE_LIMIT='abc'"),
        ({"ORCH_LLM_PROVIDER": "skynet"}, "ORCH_LLM_PROVIDER='skynet'"),
        ({"ORCH_SANDBOX_IMAGE": ""}, "ORCH_SANDBOX_IMAGE=''"),
        ({"ORCH_ENV": "production", "ORCH_BEARER_TOKEN": "changeme_for_production"}, "placeholder"),
        ({"ORCH_ENV": "production", "ORCH_REQUIRE_BEARER": "0"}, "ORCH_REQUIRE_BEARER=0"),
        (
            {"ORCH_ENV": "production", "ORCH_BEARER_TOKEN": "a" * 8 + "b9c8d7e6f5a4b3c2"},
            "ORCH_RATE_LIMIT_STORAGE_URL is required",
        ),
    ],
)
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_bad_configuration_stops_with_one_clear_line(
    tmp_path: Path, env: dict[str, str], expected: str, entry: str
) -> None:
    command = entry_command(entry)
    result = run_to_exit(tmp_path, command, env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_database_that_cannot_be_opened_stops_with_one_clear_line(tmp_path: Path, entry: str) -> None:
    command = entry_command(entry)
    env = {"ORCH_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/test"}  # nothing listens
    result = run_to_exit(tmp_path, command, env)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = stderr_lines(result)
    assert lines == [
        "orchestrators: cannot open the Postgres database (ORCH_DATABASE_URL): "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    ], result.stderr


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_development_token_path_that_cannot_be_written_stops_with_one_clear_line(tmp_path: Path, entry: str) -> None:
    (tmp_path / "a-directory").mkdir()
    env = {"ORCH_BEARER_TOKEN": "", "ORCH_DEV_TOKEN_PATH": str(tmp_path / "a-directory")}
    result = run_to_exit(tmp_path, entry_command(entry), env)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"orchestrators: cannot keep the development token in ORCH_DEV_TOKEN_PATH={str(tmp_path / 'a-directory')!r}: "
        "IsADirectoryError"
    )


@pytest.mark.parametrize("host", ["example.invalid", "127.0.0.1"])
def test_an_address_that_cannot_be_listened_on_stops_with_one_line_naming_the_flags(tmp_path: Path, host: str) -> None:
    """A host name that does not resolve, or a port in use: one line naming ORCH_HOST and ORCH_PORT,
    before any database is opened (uvicorn alone would open them all, then print a bare errno)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_to_exit(tmp_path, entry_command("python -m app"), {"ORCH_HOST": host, "ORCH_PORT": str(port)})
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"orchestrators: cannot listen on ORCH_HOST={host!r} ORCH_PORT={port}: ")
    if host == "127.0.0.1":
        assert lines[0].endswith(": Address already in use")
    assert not (tmp_path / "instance").exists()  # nothing was opened


def test_uvicorn_entry_point_serves(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    server = LiveServer(tmp_path, {}, command)
    server.url = f"http://127.0.0.1:{port}"
    with server:
        response = httpx.post(
            server.url + "/echo", json={"message": "hi"}, headers={"Authorization": f"Bearer {E2E_TOKEN}"}
        )
        assert response.json() == {"echo": "hi"}


def test_without_a_token_a_development_token_is_announced(tmp_path: Path) -> None:
    with LiveServer(tmp_path, {"ORCH_BEARER_TOKEN": ""}) as server:
        token_file = tmp_path / "instance" / "dev-token"  # relative paths resolve against the cwd
        token = token_file.read_text().strip()
        assert f"Authorization: Bearer {token}" in server.logs()
        response = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200


def test_json_access_log_has_one_line_per_request_and_no_prompt_or_token(tmp_path: Path) -> None:
    secret_prompt = "my very private prompt 8d1f"
    with LiveServer(tmp_path, {"ORCH_LOG_JSON": "1"}) as server:
        headers = {"Authorization": f"Bearer {E2E_TOKEN}", "X-Request-ID": "log-test-1"}
        reply = httpx.post(
            server.url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": secret_prompt}]},
            headers=headers,
        )
        assert reply.status_code == 200
        httpx.get(server.url + "/v1/nothing/123", headers=headers)
        server.stop()
        logs = server.logs()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("message") == "request"]
    chat = [line for line in requests if line["route"] == "/v1/chat/completions"]
    assert len(chat) == 1
    entry = chat[0]
    assert entry["request_id"] == "log-test-1" and entry["method"] == "POST" and entry["status"] == 200
    assert isinstance(entry["latency_ms"], float)
    assert any(line["route"] == "<unmatched>" and line["status"] == 404 for line in requests)
    assert secret_prompt not in logs
    assert "[ORCHESTRATORS_V2" not in logs  # nor the reply
    assert E2E_TOKEN not in logs
    assert str(ROOT) not in json.dumps(requests)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_debug_logging_keeps_prompts_memories_and_tokens_out(tmp_path: Path, entry: str) -> None:
    """At ORCH_LOG_LEVEL=DEBUG our own DEBUG lines appear, but no library's: the SQLite driver
    logs every statement with its parameters (memory text, the words of a recall search).
    A WebSocket handshake is refused without its raw path reaching the log (``python -m app``
    does not take the upgrade: 404; under a plain uvicorn command line, uvicorn's 403)."""
    marker = "purplemarker elephant"
    env = {
        "ORCH_LOG_JSON": "1",
        "ORCH_LOG_LEVEL": "DEBUG",
        "ORCH_MEMORY_ENABLED": "1",
        "ORCH_MEMORY_CAPTURE_ENABLED": "1",
        "ORCH_MEMORY_RECALL_ENABLED": "1",
    }
    server = LiveServer(tmp_path, env, entry_command(entry))
    if entry != "python -m app":  # uvicorn's own --port
        server.port = int(server.command[-1])
        server.url = f"http://127.0.0.1:{server.port}"
    with server:
        headers = {"Authorization": f"Bearer {E2E_TOKEN}"}
        for text in (f"Remember that my locker code is {marker}", f"What is the {marker}?"):
            reply = httpx.post(
                server.url + "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": text}]},
                headers=headers,
            )
            assert reply.status_code == 200
        assert reply.json()["memory_decision"] is not None
        assert httpx.get(server.url + "/health").status_code == 200
        # A WebSocket handshake with the token in its path and query: uvicorn would log it raw.
        with socket.create_connection(("127.0.0.1", server.port)) as conn:
            conn.sendall(
                (
                    f"GET /v1/ws/{E2E_TOKEN}?token={E2E_TOKEN} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            assert conn.recv(4096).startswith(b"HTTP/1.1 404" if entry == "python -m app" else b"HTTP/1.1 403")
        server.stop()
        logs = server.logs()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line["level"] == "DEBUG" and line["logger"].startswith("orchestrators") for line in lines)
    assert not [line for line in lines if not line["logger"].startswith(("orchestrators", "uvicorn"))]
    assert "purplemarker" not in logs
    assert E2E_TOKEN not in logs


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_database_migrated_by_a_newer_version_stops_startup(tmp_path: Path, entry: str) -> None:
    """An older release must not run on tables a newer one changed: one line, exit 3, and the
    database is left as it was."""
    path = tmp_path / "trace.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL,"
            " name TEXT NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (component, version))"
        )
        conn.execute("INSERT INTO schema_migrations VALUES ('traces', 99, 'from the future', '2030-01-01')")
    result = run_to_exit(tmp_path, entry_command(entry), {"ORCH_TRACE_DB_PATH": str(path)})
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = stderr_lines(result)
    assert len(lines) == 1 and "traces tables were migrated by a newer version" in lines[0], result.stderr
    assert "schema version 99; this version knows up to 4" in lines[0]
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"schema_migrations"}
