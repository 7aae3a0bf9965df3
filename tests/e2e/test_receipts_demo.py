"""`make demo` (scripts/receipts_demo.py) end to end: the real service started in a temporary
directory, the tour's steps printed, every receipt verified offline, the exit status honest."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.api.tools_support import require_docker
from tests.e2e.server import ROOT

pytestmark = pytest.mark.e2e

DEMO = ROOT / "scripts" / "receipts_demo.py"


def run_demo(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=120, env=base, check=False
    )


def test_the_demo_tours_the_receipts_with_docker() -> None:
    require_docker()
    result = run_demo()
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "-> 42;" in out
    assert "approval_required" in out and "HTTP 403" in out and "stdout '285\\n', exit 0" in out
    assert "policy_denied:exfiltration (rule demo_no_network_from_code)" in out
    # four receipts (the tool call, the approval request, the approved run, the denial), each
    # verified by the offline verifier
    assert len(re.findall(r"^   verify_receipts\.py: VERIFIED trace ", out, re.M)) == 4
    assert "the trace's ledger entry is a leaf of the tree" in out and "signed by orchestrators.local/" in out
    assert "Done: every step did what it says." in out and "SKIPPED" not in out and "Traceback" not in result.stderr


def test_without_docker_the_demo_says_so_and_skips_only_the_sandboxed_step() -> None:
    result = run_demo({"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "SKIPPED: Docker is not available here" in out and "stdout '285" not in out
    assert "approval_required" not in out  # the service refuses before asking anyone: no sandbox
    assert "policy_denied:exfiltration" in out
    assert len(re.findall(r"^   verify_receipts\.py: VERIFIED trace ", out, re.M)) >= 2
    assert "Done: every step did what it says." in out


def test_a_receipt_that_does_not_verify_fails_the_demo() -> None:
    # The verifier's exit status is the judge: one that fails (here: a verifier that is not
    # there) makes the demo fail, never say "Done".
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; import scripts.receipts_demo as d; "
            "d.VERIFIER = d.Path(sys.executable).parent / 'nonexistent-verifier.py'; sys.exit(d.main([]))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ORCH_")},
            "PYTHONPATH": str(ROOT),
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        },
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED: the offline verifier did not verify" in result.stdout and "Done:" not in result.stdout
