"""What a new user meets first: `python -m app` with no configuration at all, on a machine
without Docker, is ready and says what is off."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.server import LiveServer

pytestmark = pytest.mark.e2e


def test_zero_configuration_without_docker_is_ready_and_says_what_is_off(tmp_path: Path) -> None:
    # No ORCH_* flag but the port and token the harness needs; Docker is nowhere to be found.
    with LiveServer(tmp_path, {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}) as server:
        ready = httpx.get(server.url + "/ready", timeout=10)
        logs = server.logs()
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert ready.json()["degraded"] == ["sandbox_unavailable:docker_unreachable"]
    assert "sandbox: off (docker does not answer)" in logs
    assert "set ORCH_TOOL_SANDBOX_REQUIRED=1 to make /ready fail instead" in logs
