"""The long steps of make run / make test say what they do and how far along they are:
scripts/pip_install.sh (one line per package, the time taken, pip's errors and exit status
kept) and scripts/build_llama_server.sh waiting on another build's lock (whose, since when, at
which step)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_wheel(directory: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel, so pip installs something without the network."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel


def test_pip_install_prints_each_package_and_the_time(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "orch_probe_one", "1.0")
    make_wheel(wheels, "orch_probe_two", "2.5")
    (tmp_path / "probe.lock").write_text("# pinned\norch_probe_one==1.0\norch_probe_two==2.5\n")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    command = [
        "bash",
        str(ROOT / "scripts" / "pip_install.sh"),
        str(venv),
        "a test, ~1 s",
        "-r",
        str(tmp_path / "probe.lock"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert (
        lines[0] == f"make: installing 2 pinned package(s) from {tmp_path / 'probe.lock'} into {venv} (a test, ~1 s)..."
    )
    assert "  [1/2] orch_probe_one==1.0" in lines
    assert "  [2/2] orch_probe_two==2.5" in lines
    assert "  unpacking and installing 2 package(s)..." in lines
    assert lines[-1].startswith(f"make: installed into {venv} in ")

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert "  [1/2] orch_probe_one==1.0 (already there)" in again.stdout.splitlines(), again.stdout

    missing = [*command[:4], "orch_probe_three==9.9"]
    failed = subprocess.run(missing, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert failed.returncode != 0
    assert "No matching distribution found for orch_probe_three==9.9" in failed.stderr
    assert "make: installed" not in failed.stdout


def test_a_build_waiting_on_the_lock_says_whose_since_when_and_at_which_step(tmp_path: Path) -> None:
    cache = tmp_path / "llama-server-0.3.36"
    cache.mkdir()
    started = int(time.time()) - 200
    (cache / ".lock.owner").write_text(f"4242 {started}\n")
    (cache / "build.log").write_text("-- Configuring done\n[ 45%] Building CXX object common/arg.cpp.o\n")
    holder = subprocess.Popen(["flock", str(cache / ".lock"), "sleep", "30"])
    try:
        time.sleep(0.3)  # flock has the lock
        env = {**os.environ, "ORCH_CACHE_DIR": str(tmp_path), "LOCK_REPORT_SEC": "1"}
        waiting = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "build_llama_server.sh")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            line = waiting.stderr.readline() if waiting.stderr else ""  # within ~1 s
        finally:
            os.killpg(waiting.pid, 15)
            waiting.wait(timeout=10)
    finally:
        holder.kill()
        holder.wait()
    since = time.strftime("%H:%M:%S", time.localtime(started))
    assert line.startswith(
        f"[build_llama_server] waiting for the lock {cache / '.lock'} held by PID 4242 (a build started {since}, "
    )
    assert line.rstrip().endswith("s ago) at: [ 45%] Building CXX object common/arg.cpp.o")
