"""Receipt bundles v2 and the offline verifier, on SQLite and on Postgres: a bundle verifies given
only itself and the log's key (chain, ledger entry, inclusion proof, signed checkpoint), and an
earlier trusted checkpoint proves the log only grew; v1 bundles still verify; the DSSE / in-toto
attestation of a trace, checked here from the DSSE specification and by the offline verifier."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI

from app.receipts.notes import Signer
from tests.api.test_receipt_binding import SETTINGS, sign
from tests.api.test_receipts import ROOT, chat, panel
from tests.conftest import Backend, assert_envelope


def offline(file: Path, *args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    """The verifier on the system interpreter, as a third party would run it."""
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    env = {"PATH": "/usr/bin:/bin", **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    return subprocess.run(
        [python, str(ROOT / "scripts/verify_receipts.py"), str(file), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def write(path: Path, value: Any) -> Path:
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


async def test_a_bundle_verifies_with_only_the_key(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    async with panel(app_factory, backend, **SETTINGS) as (client, state):
        ids = [await chat(client, state) for _ in range(3)]
        bundle = (await client.get(f"/v1/trust/trace/{ids[1]}/export")).json()  # signs a checkpoint of 3
        public = (await client.get("/v1/trust/public-key")).json()
    assert bundle["format"] == "orchestrators.receipt.v2"
    assert bundle["checkpoint"]["tree_size"] == 3 and bundle["inclusion"]["leaf_index"] == 1
    assert bundle["verifier_key"] == public["verifier_key"] and bundle["trace"]["principal"] == "owner"
    path = write(tmp_path / "bundle.json", bundle)
    key_file = write(tmp_path / "key.json", public)
    for key in (public["verifier_key"], str(key_file)):
        good = offline(path, "--key", key)
        assert good.returncode == 0 and good.stdout.startswith("VERIFIED"), good.stdout + good.stderr
        assert "checked: the checkpoint of 3 entries" in good.stdout and "inclusion as leaf 1" in good.stdout
        assert "not checked: that the log only grew" in good.stdout  # no --checkpoint given
    unpinned = offline(path)
    assert unpinned.returncode == 0 and "not checked: who signed" in unpinned.stdout
    other = Signer.generate(public["key_name"]).verifier.text  # the same name, another key
    wrong = offline(path, "--key", other)
    assert wrong.returncode == 1 and "checkpoint_invalid" in wrong.stdout, wrong.stdout
    either = offline(path, "--key", other, "--key", public["verifier_key"])  # keys before and after a rotation
    assert either.returncode == 0, either.stdout
    forged = json.loads(json.dumps(bundle))
    forged["inclusion"]["audit_path"][0] = base64.b64encode(b"\0" * 32).decode()
    bad_path = offline(write(tmp_path / "forged.json", forged), "--key", public["verifier_key"])
    assert bad_path.returncode == 1 and "inclusion_failed" in bad_path.stdout
    forged = json.loads(json.dumps(bundle))
    forged["checkpoint"]["note"] = forged["checkpoint"]["note"].replace("\n3\n", "\n2\n", 1)
    resized = offline(write(tmp_path / "resized.json", forged), "--key", public["verifier_key"])
    assert resized.returncode == 1 and "checkpoint_invalid" in resized.stdout
    # v1 bundles (an earlier version's export) still verify as before: the chain and the columns.
    v1 = {key: bundle[key] for key in ("exported_at", "steps", "ledger_entry")}
    v1["format"] = "orchestrators.receipt.v1"
    v1["trace"] = {k: v for k, v in bundle["trace"].items() if k not in ("principal", "ledger_seq")}
    old = offline(write(tmp_path / "v1.json", v1))
    assert old.returncode == 0 and "not checked: inclusion in a signed log" in old.stdout, old.stdout
    v1["steps"][1]["step_json"] = v1["steps"][1]["step_json"].replace("demo", "evil")
    assert offline(write(tmp_path / "v1.json", v1)).returncode == 1


async def test_an_earlier_checkpoint_proves_the_log_only_grew(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    async with panel(app_factory, backend, **SETTINGS) as (client, state):
        ids = [await chat(client, state) for _ in range(2)]
        await sign(state)
        early_note = (await client.get("/v1/trust/checkpoint", params={"format": "note"})).text
        early_bundle = (await client.get(f"/v1/trust/trace/{ids[0]}/export")).json()
        ids += [await chat(client, state) for _ in range(3)]
        await sign(state)
        late_json = (await client.get("/v1/trust/checkpoint")).json()
        plain = (await client.get(f"/v1/trust/trace/{ids[0]}/export")).json()
        proving = (await client.get(f"/v1/trust/trace/{ids[0]}/export", params={"consistency_from": 2})).json()
        proof = (await client.get("/v1/trust/proof/consistency", params={"from": 2, "to": 5})).json()
        too_far = await client.get(f"/v1/trust/trace/{ids[0]}/export", params={"consistency_from": 9})
        key = (await client.get("/v1/trust/public-key")).json()["verifier_key"]
    assert assert_envelope(too_far, 400, param="consistency_from")["code"] == "invalid_tree_size"
    early = write(tmp_path / "early.note", early_note)
    late = write(tmp_path / "late.json", late_json)
    proof_file = write(tmp_path / "proof.json", proof)
    assert plain["checkpoint"]["tree_size"] == 5 and plain["consistency"] is None
    missing = offline(write(tmp_path / "plain.json", plain), "--key", key, "--checkpoint", str(early))
    assert missing.returncode == 1 and "no_consistency_proof" in missing.stdout, missing.stdout
    for bundle_file, extra in (
        (write(tmp_path / "proving.json", proving), []),
        (tmp_path / "plain.json", ["--proof", str(proof_file)]),
    ):
        grown = offline(bundle_file, "--key", key, "--checkpoint", str(early), *extra)
        assert grown.returncode == 0, grown.stdout + grown.stderr
        assert "checked: consistency from the checkpoint of 2 entries to the one of 5" in grown.stdout
    # A bundle older than the trusted checkpoint: it needs the proof from its size to the trusted one.
    stale = offline(write(tmp_path / "early.json", early_bundle), "--key", key, "--checkpoint", str(late))
    assert stale.returncode == 1 and "stale_checkpoint" in stale.stdout
    caught_up = offline(tmp_path / "early.json", "--key", key, "--checkpoint", str(late), "--proof", str(proof_file))
    assert caught_up.returncode == 0, caught_up.stdout
    forged = {**proof, "proof": [base64.b64encode(b"\1" * 32).decode() for _ in proof["proof"]]}
    rewritten = offline(
        tmp_path / "plain.json", "--key", key, "--checkpoint", str(early), "--proof", str(write(tmp_path / "f", forged))
    )
    assert rewritten.returncode == 1 and "inconsistent" in rewritten.stdout


async def test_without_cryptography_everything_but_the_signature_is_checked(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    async with panel(app_factory, backend, **SETTINGS) as (client, state):
        trace_id = await chat(client, state)
        bundle = (await client.get(f"/v1/trust/trace/{trace_id}/export")).json()
        key = (await client.get("/v1/trust/public-key")).json()["verifier_key"]
    hidden = tmp_path / "no-crypto" / "cryptography"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    path = write(tmp_path / "bundle.json", bundle)
    partial = offline(path, "--key", key, pythonpath=str(hidden.parent))
    assert partial.returncode == 3, partial.stdout + partial.stderr
    assert "not checked: the Ed25519 signature (the `cryptography` package is not installed)" in partial.stdout
    assert "inclusion as leaf 0" in partial.stdout
    bundle["steps"][0]["step_json"] = bundle["steps"][0]["step_json"].replace("owner", "mallory")
    broken = offline(write(path, bundle), "--key", key, pythonpath=str(hidden.parent))
    assert broken.returncode == 1 and "chain_broken" in broken.stdout


def dsse_pae(payload_type: str, body: bytes) -> bytes:
    """DSSE protocol.md: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in ASCII
    decimal bytes (written here from the specification, not imported)."""
    kind = payload_type.encode()
    return b" ".join([b"DSSEv1", str(len(kind)).encode(), kind, str(len(body)).encode(), body])


async def test_a_trace_as_a_signed_in_toto_statement(
    app_factory: Callable[..., FastAPI], backend: Backend, tmp_path: Path
) -> None:
    async with panel(app_factory, backend, **SETTINGS) as (client, state):
        trace_id = await chat(client, state)
        response = await client.get(f"/v1/trust/trace/{trace_id}/attestation")
        assert response.status_code == 200, response.text
        envelope = response.json()
        head = (await client.get(f"/v1/trust/verify/{trace_id}")).json()["head_hash"]
        public = (await client.get("/v1/trust/public-key")).json()
        await backend.execute(
            "UPDATE trace_steps SET step_json = REPLACE(step_json, 'demo', 'evil') WHERE trace_id = $1", trace_id
        )
        refused = await client.get(f"/v1/trust/trace/{trace_id}/attestation")
        unknown = await client.get("/v1/trust/trace/00000000-0000-4000-8000-000000000000/attestation")
    assert assert_envelope(refused, 409)["code"] == "receipt_not_verified"
    assert assert_envelope(unknown, 404)["code"] == "trace_not_found"
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    body = base64.b64decode(envelope["payload"])
    [signature] = envelope["signatures"]
    assert signature["keyid"] == public["key_id"]
    raw_key = base64.b64decode(public["verifier_key"].split("+", 2)[2])[1:]
    Ed25519PublicKey.from_public_bytes(raw_key).verify(
        base64.b64decode(signature["sig"]), dsse_pae(envelope["payloadType"], body)
    )
    statement = json.loads(body)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [{"name": f"orchestrators-trace:{trace_id}", "digest": {"sha256": head}}]
    assert statement["predicateType"] == "https://orchestrators.local/attestation/receipt-decisions/v1"
    predicate = statement["predicate"]
    assert predicate["route"] == "/v1/chat/completions" and predicate["principal"] == "owner"
    assert predicate["models"][0]["provider"] == "demo" and predicate["model"] == predicate["models"][0]["model"]
    assert predicate["memory_decision"] == "deny:feature_disabled"
    assert predicate["tool_calls"] == [] and predicate["approval_ids"] == []
    assert predicate["ledger"]["seq"] == 1 and predicate["checkpoint"].startswith(public["origin"] + "\n1\n")
    path = write(tmp_path / "attestation.json", envelope)
    checked = offline(path, "--key", public["verifier_key"])
    assert checked.returncode == 0 and f"head {head}" in checked.stdout, checked.stdout + checked.stderr
    assert offline(path).returncode == 2  # an attestation is checked against a key given
    forged = {**envelope, "payload": base64.b64encode(body.replace(b"owner", b"alice")).decode()}
    bad = offline(write(path, forged), "--key", public["verifier_key"])
    assert bad.returncode == 1 and "signature_invalid" in bad.stdout


async def test_an_approved_tool_call_is_attested_with_its_argument_hash_and_approval(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    from tests.api.test_approvals import CALC, tools_app
    from tests.api.tools_support import approve, execute

    async with tools_app(app_factory, tmp_path) as (client, state):
        approval = await approve(client, "safe_calc", CALC)
        run = await execute(client, "safe_calc", CALC, approval_token=approval["approval_id"])
        await state.tracer.flush()
        envelope = (await client.get(f"/v1/trust/trace/{run['trace_id']}/attestation")).json()
    predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
    [call] = predicate["tool_calls"]
    assert call["tool"] == "safe_calc" and call["status"] == "ok" and call["args_hash"] == approval["args_hash"]
    assert predicate["approval_ids"] == [approval["approval_id"]]
    assert predicate["approvals"] == [
        {"tool": "safe_calc", "approved": True, "reason": "approved", "approval_id": approval["approval_id"]}
    ]
    assert "6*7" not in json.dumps(predicate)  # the arguments' hash, never their values
