"""Start the real service with uvicorn on a free port, as a user would, and stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
E2E_TOKEN = "e2e-owner-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """``python -m app`` (or any command) in a subprocess, with its own working directory."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, command: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log_path = workdir / "server.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        base.update(
            {
                "ORCH_HOST": "127.0.0.1",
                "ORCH_PORT": str(self.port),
                "ORCH_BEARER_TOKEN": E2E_TOKEN,
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
            }
        )
        base.update(env or {})
        self.env = base
        self.command = command or [sys.executable, "-m", "app"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> LiveServer:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start within {timeout}s:\n{self.logs()}")

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

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
