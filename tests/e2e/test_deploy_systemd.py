"""deploy/systemd: the unit checked by systemd's own tools (`systemd-analyze verify` and its
offline security review), and the multi-worker run command it starts, run as the unit runs it
(its environment file, several uvicorn workers) against the real Redis."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ROOT, free_port

pytestmark = pytest.mark.e2e

UNIT = ROOT / "deploy" / "systemd" / "orchestrators.service"
ENV_FILE = ROOT / "deploy" / "systemd" / "orchestrators.env"
REDIS = "redis://127.0.0.1:6379/0"  # the test machine's (PREAMBLE: Redis at 127.0.0.1:6379)


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.fail("systemd-analyze is required (Debian: apt-get install systemd)", pytrace=False)
    return found


def local_unit(tmp_path: Path) -> Path:
    """The unit with its two absolute paths pointed at this checkout (verify checks that the
    command exists and reads the environment file)."""
    text = UNIT.read_text()
    assert "/opt/orchestrators/venv/bin/python" in text and "/etc/orchestrators/orchestrators.env" in text
    text = text.replace("/opt/orchestrators/venv/bin/python", sys.executable)
    text = text.replace("/etc/orchestrators/orchestrators.env", str(ENV_FILE))
    path = tmp_path / "orchestrators.service"
    path.write_text(text)
    return path


def env_file() -> dict[str, str]:
    values = {}
    for line in ENV_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_the_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    result = subprocess.run(
        [systemd_analyze(), "verify", str(local_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_the_unit_is_hardened(tmp_path: Path) -> None:
    text = UNIT.read_text()
    for setting in (
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/orchestrators",
        "Restart=on-failure",
        "CapabilityBoundingSet=\n",
    ):
        assert setting in text, setting
    assert not re.search(r"^SupplementaryGroups=.*docker", text, re.M)  # the socket is host root
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--no-pager", str(local_unit(tmp_path))],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    level = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
    assert level, result.stdout[-2000:] + result.stderr
    # systemd's scale: 0 (all locked down) to 10 (unprotected); below 2 it rates "OK".
    assert float(level.group(1)) < 2.0 and level.group(2) == "OK", level.group(0)


def test_the_multi_worker_run_command_serves_with_the_env_file(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "UVICORN_"))},
        **env_file(),
    }
    env.update(
        {
            "UVICORN_PORT": str(port),
            "PYTHONPATH": str(ROOT),
            "ORCH_BEARER_TOKEN": "systemd-test-owner-token-0123456789abcdef",
            "ORCH_APPROVER_TOKEN": "systemd-test-approver-token-0123456789ab",
            "ORCH_RATE_LIMIT_STORAGE_URL": REDIS,
        }
    )
    assert env["UVICORN_WORKERS"] == "2" and env["ORCH_ENV"] == "production"
    # The unit's ExecStart, word for word but for the interpreter.
    exec_start = re.search(r"^ExecStart=(.*)$", UNIT.read_text(), re.M)
    assert exec_start
    command = exec_start.group(1).split()
    command[0] = sys.executable
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(url + "/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        logs = (tmp_path / "server.log").read_text(errors="replace")
        assert ready is not None and ready.status_code == 200, logs[-3000:]
        children = subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) >= 2, children  # the supervisor and its two workers
        headers = {"Authorization": f"Bearer {env['ORCH_BEARER_TOKEN']}"}
        answer = httpx.post(
            url + "/v1/tools/execute", json={"name": "safe_calc", "args": {"expression": "2+3"}}, headers=headers
        )
        assert answer.status_code == 200 and answer.json()["result"]["result"] == 5, answer.text
        assert "server" not in answer.headers  # UVICORN_SERVER_HEADER=false reached uvicorn
        assert (tmp_path / "instance" / "trace.db").exists()  # state under the working directory
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=20)  # the unit's TimeoutStopSec
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    logs = (tmp_path / "server.log").read_text(errors="replace")
    assert returncode == 0, logs[-3000:]
    assert "Traceback" not in logs and "systemd-test-owner-token" not in logs
