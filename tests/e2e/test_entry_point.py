"""The command line of ``python -m app`` and of the installed ``orchestrators`` command: ``--help``
and ``--version`` answer without starting anything, ``--host``/``--port`` override ORCH_HOST and
ORCH_PORT; and the package builds without build isolation with the setuptools the lock pins."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import E2E_TOKEN, ROOT, LiveServer, free_port, run_to_exit, stderr_lines

pytestmark = pytest.mark.e2e

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def run_app(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_to_exit(tmp_path, [sys.executable, "-m", "app", *args], {})


def test_help_describes_the_options_and_starts_nothing(tmp_path: Path) -> None:
    result = run_app(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m app [-h] [--version] [--host HOST] [--port PORT]")
    for text in ("--host HOST", "overrides ORCH_HOST", "--port PORT", "overrides ORCH_PORT", "docs/configuration.md"):
        assert text in result.stdout
    assert result.stderr == ""
    assert not (tmp_path / "instance").exists()  # no store was opened, no token generated


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    result = run_app(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"orchestrators {VERSION}\n"
    assert not (tmp_path / "instance").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "argument --port: expected a TCP port 1-65535, got '0'"),
        (["--port", "http"], "argument --port: expected a TCP port 1-65535, got 'http'"),
        (["--host", "not a host"], "argument --host: expected an IP address"),
        (["--serve-forever"], "unrecognized arguments: --serve-forever"),
    ],
)
def test_a_bad_option_stops_with_usage_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_app(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "instance").exists()


def test_host_and_port_options_override_the_environment(tmp_path: Path) -> None:
    port = free_port()
    # The environment says every interface and another port: the options win.
    server = LiveServer(tmp_path, {"ORCH_HOST": "0.0.0.0"}, [sys.executable, "-m", "app", "--host", "127.0.0.1"])
    env_port = server.port
    server.command += ["--port", str(port)]
    server.port, server.url = port, f"http://127.0.0.1:{port}"
    with server:
        response = httpx.post(
            server.url + "/echo", json={"message": "hi"}, headers={"Authorization": f"Bearer {E2E_TOKEN}"}
        )
        assert response.json() == {"echo": "hi"}
        assert f"Uvicorn running on http://127.0.0.1:{port} " in server.logs()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{env_port}/health", timeout=2)


def test_a_port_in_use_names_the_option(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_app(tmp_path, "--port", str(port))
    assert result.returncode == 3, result.stderr
    lines = stderr_lines(result)
    assert lines == [f"orchestrators: cannot listen on ORCH_HOST='127.0.0.1' --port={port}: Address already in use"]


def test_the_wheel_builds_without_build_isolation_and_installs_the_command(tmp_path: Path) -> None:
    """``pip wheel --no-build-isolation`` with this virtualenv's setuptools (the one
    requirements-dev.lock pins; ``make run`` builds its editable install the same way), then the
    wheel in a fresh virtualenv: its ``orchestrators`` command answers --version and --help."""
    source = tmp_path / "source"  # a copy: an in-tree build would leave build/ and *.egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "app", source / "app", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    env = {**os.environ, "PIP_NO_INDEX": "1"}  # nothing may come from the network
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("orchestrators-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"orchestrators-{VERSION}.dist-info/METADATA").decode()
        entry_points = archive.read(f"orchestrators-{VERSION}.dist-info/entry_points.txt").decode()
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "orchestrators = app.__main__:main" in entry_points

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    installed = subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    command = venv / "bin" / "orchestrators"
    # --help and --version import nothing beyond the standard library, so the bare wheel answers.
    version = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=30, check=False)
    assert (version.returncode, version.stdout) == (0, f"orchestrators {VERSION}\n"), version.stderr
    helped = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: orchestrators [-h] [--version] [--host HOST] [--port PORT]")
