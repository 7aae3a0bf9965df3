"""The safety scripts as a person runs them: on this checkout, on a clean and on a dirty tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"  # the shape of a GitHub token, not one


def run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VENV": str(Path(sys.executable).parents[1])}
    return subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def git_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    subprocess.run(["git", "-C", str(path), "add", "-f", *files], check=True)
    return path


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    return git_repo(
        tmp_path / "clean",
        {".gitignore": (ROOT / ".gitignore").read_text(), ".env.example": "ORCH_PORT=8088\n", "app.py": "x = 1\n"},
    )


def test_this_checkout_is_inside_the_boundary_even_after_the_service_ran() -> None:
    (ROOT / "instance").mkdir(exist_ok=True)
    marker = ROOT / "instance" / "boundary-test.db"
    marker.write_text("state a running service leaves")
    try:
        result = run(ROOT / "scripts" / "verify_public_boundary.sh")
    finally:
        marker.unlink()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("PUBLIC BOUNDARY SAFE")


def test_a_clean_tree_is_safe_and_every_kind_of_dirt_is_named(clean: Path) -> None:
    script = ROOT / "scripts" / "verify_public_boundary.sh"
    assert run(script, clean).stdout.strip() == "PUBLIC BOUNDARY SAFE"
    (clean / "trace.db").write_text("x")
    subprocess.run(["git", "-C", str(clean), "add", "-f", "trace.db"], check=True)  # tracked state
    (clean / ".gitignore").write_text("instance/\n")  # no longer ignores .env, *.db, keys
    (clean / ".env").write_text("ORCH_BEARER_TOKEN=x\n")
    (clean / ".env.example").unlink()
    result = run(script, clean)
    assert result.returncode == 1
    out = result.stdout
    assert "tracked: trace.db" in out and "not ignored: .env" in out and "missing: .env.example" in out
    assert ".gitignore does not ignore server.pem" in out and "PUBLIC BOUNDARY NOT SAFE" in out


def test_the_boundary_needs_a_git_checkout(tmp_path: Path) -> None:
    result = run(ROOT / "scripts" / "verify_public_boundary.sh", tmp_path)
    assert result.returncode == 2 and "not a git checkout" in result.stderr


def test_the_secret_scan_passes_this_checkout() -> None:
    result = run(ROOT / "scripts" / "secret_scan.sh")
    assert result.returncode == 0, result.stdout
    assert "no credentials in tracked files" in result.stdout


def test_the_secret_scan_finds_a_token_without_printing_it(clean: Path) -> None:
    script = ROOT / "scripts" / "secret_scan.sh"
    assert run(script, clean).returncode == 0
    (clean / "config.py").write_text(f"# deploy\nGITHUB = '{FAKE_TOKEN}'\n")
    subprocess.run(["git", "-C", str(clean), "add", "config.py"], check=True)
    result = run(script, clean)
    assert result.returncode == 1
    assert "SECRET: config.py:2:" in result.stdout and FAKE_TOKEN not in result.stdout + result.stderr
    (clean / ".secret-scan-allow").write_text("config.py  # a fixture that must hold a fake token\n")
    assert run(script, clean).returncode == 0
    shutil.rmtree(clean / ".git")
    assert run(script, clean).returncode == 2


def test_the_security_scan_passes_this_checkout() -> None:
    result = run(ROOT / "scripts" / "security_scan.sh")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bandit: no issues" in result.stdout
    assert "pip-audit" in result.stdout
