"""Without Docker the default configuration is ready: the sandbox is listed as degraded, its tools
answer sandbox_unavailable, and the startup line says what is off and which flag changes that."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from fastapi import FastAPI

from tests.api.tools_support import execute
from tests.conftest import running

NOWHERE = "unix:///nonexistent/docker.sock"


async def test_the_default_configuration_is_ready_without_docker(
    app_factory: Callable[..., FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running(app_factory(sandbox_docker_url=NOWHERE)) as client:
        ready = await client.get("/ready")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready" and body["degraded"] == ["sandbox_unavailable:docker_unreachable"]
        assert (await execute(client, "python_exec", {"code": "print(1)"}))["error"] == "sandbox_unavailable"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sandbox: ")]
    assert lines == [
        "sandbox: off (docker does not answer); tools that need it answer sandbox_unavailable; "
        "set ORCH_TOOL_SANDBOX_REQUIRED=1 to make /ready fail instead"
    ]


async def test_an_operator_who_requires_the_sandbox_gets_503(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory(sandbox_docker_url=NOWHERE, tool_sandbox_required=True)) as client:
        ready = await client.get("/ready")
    assert ready.status_code == 503 and ready.json()["reason"] == "sandbox_unavailable:docker_unreachable"


def test_the_startup_line_names_the_flag_for_each_state() -> None:
    from app.tools.service import sandbox_startup_line

    assert sandbox_startup_line(True, "ok", required=False) is None
    line = sandbox_startup_line(True, "docker_not_found", required=False)
    assert line is not None and line.startswith("sandbox: off (docker not found)")
    assert "ORCH_TOOL_SANDBOX_REQUIRED=1" in line
    required = sandbox_startup_line(True, "sandbox_image_missing", required=True)
    assert required is not None and "scripts/build_sandbox_image.sh" in required and "503" in required
    assert "ORCH_TOOL_SANDBOX_ENABLED=0" in (sandbox_startup_line(False, "sandbox_disabled", required=False) or "")
