"""Start the real service with uvicorn on a free port, as a user would, and stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx

ROOT = Path(__file__).resolve().parents[2]
E2E_TOKEN = "e2e-owner-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ManagedProcess:
    """A server in a subprocess for the length of a test: started, awaited until its health URL
    answers 200, its output kept in a log file, stopped (terminate, then kill)."""

    name = "server"
    health_path = "/health"

    def __init__(self, command: list[str], *, port: int, cwd: Path, env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.cwd = cwd
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Self:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.logs()[-4000:]}")
            try:
                if httpx.get(self.url + self.health_path, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start within {timeout}s:\n{self.logs()[-4000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LiveServer(ManagedProcess):
    """The service (``python -m app``, or any command) in its own working directory."""

    name = "the service"

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, command: list[str] | None = None) -> None:
        port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        base.update(
            {
                "ORCH_HOST": "127.0.0.1",
                "ORCH_PORT": str(port),
                "ORCH_BEARER_TOKEN": E2E_TOKEN,
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
            }
        )
        base.update(env or {})
        super().__init__(
            command or [sys.executable, "-m", "app"], port=port, cwd=workdir, env=base, log_path=workdir / "server.log"
        )
        self.workdir = workdir


# --- a service that should refuse to start ------------------------------------------------------

ENTRY_POINTS = ["python -m app", "uvicorn app.main:app"]  # the two ways a user starts it


def entry_command(entry: str) -> list[str]:
    """The command of one of ENTRY_POINTS (uvicorn on a free port)."""
    if entry == "python -m app":
        return [sys.executable, "-m", "app"]
    return [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(free_port())]


def run_to_exit(tmp_path: Path, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with the e2e environment plus ``env`` until it exits (within 30 s)."""
    server = LiveServer(tmp_path, env, command)
    return subprocess.run(
        command, check=False, cwd=tmp_path, env=server.env, capture_output=True, text=True, timeout=30
    )


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]
