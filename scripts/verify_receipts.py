#!/usr/bin/env python3
"""Verify an exported receipt offline, without the server: ``python3 scripts/verify_receipts.py FILE``.

FILE is one of:

* a trace bundle, ``orchestrators.receipt.v2`` (``GET /v1/trust/trace/{id}/export``): the chain
  step by step (every step's hash recomputed from its stored canonical text, linked to the one
  before), the recorded head, step count, finish, principal and ledger position against the chain
  and the ledger entry, the ``metadata`` shown against the hashed request step, then the ledger
  entry's leaf and its inclusion proof (RFC 9162 2.1.3.2) against the root of the signed
  checkpoint in the bundle, and the checkpoint's Ed25519 signature (C2SP signed note) by the key
  given with ``--key``. A trace that has not finished has no ledger entry: no signed log vouches
  for it, and it is not verified;
* a trace bundle ``orchestrators.receipt.v1`` (earlier versions): the chain and the columns, as
  before (no proof, no signature);
* a ledger bundle ``orchestrators.ledger.v1`` (``GET /v1/trust/ledger``): link by link; one with no
  entries verifies nothing and is not verified;
* an archive the retention job wrote before pruning (``orchestrators.archive.v1``, in
  ``ORCH_TRACE_ARCHIVE_DIR``): its ledger range checked as a ledger bundle, then every trace bundle
  in it (v1) as above and against that range's entry for it; a trace of the range that is neither
  in it nor listed as already lost when it was archived makes it not verified, and so does one
  listed as lost;
* a DSSE envelope (``GET /v1/trust/trace/{id}/attestation``): its signature over the DSSE PAE
  encoding by ``--key``, and the in-toto Statement inside.

``--key`` is the log's verifier key (``<name>+<key id>+<base64 key>``, as ``GET
/v1/trust/public-key`` gives it), or a file holding it (or that route's JSON answer). Without it
the bundle's own ``verifier_key`` is used, which shows the bundle is self-consistent, not who
signed it: the output says so. Give ``--key`` more than once to trust several keys (the keys
before and after a rotation).

``--checkpoint FILE``: an earlier checkpoint you trust (a signed note, the JSON of ``GET
/v1/trust/checkpoint``, or a witness file of one JSON object per line, of which every line is
checked and the largest is used). The log must have only grown since: same size, same root;
smaller, a consistency proof (RFC 9162 2.1.4.2) from it to the bundle's checkpoint, from the bundle
(``export?consistency_from=<its size>``) or from ``--proof FILE`` (the JSON of ``GET
/v1/trust/proof/consistency``); larger, ``--proof`` from the bundle's size to it. This is what
catches a rewritten history, a rolled-back database and a forked log.

``--expected-head HASH`` also compares the head (a trace's last step hash, or a ledger range's last
entry hash) with one you saved earlier.

Needs only the Python standard library, plus the ``cryptography`` package for the Ed25519
signatures: without it every other check is made and the output says the signature was not.
Exit status: 0 verified; 1 not verified; 2 unreadable input; 3 everything checked held but a
signature could not be checked (no ``cryptography``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.receipts.attest import PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE, open_envelope, pae
from app.receipts.chain import GENESIS, UNRECORDED, Verdict, entry_canonical, verify_ledger, verify_trace
from app.receipts.merkle import leaf_hash, verify_consistency, verify_inclusion
from app.receipts.notes import Checkpoint, NoteError, Verifier, parse_checkpoint, parse_verifier_key, split_note

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError:  # the signature is then reported as not checked
    Ed25519PublicKey = None  # type: ignore[assignment,misc]

TRACE_BUNDLE_V1 = "orchestrators.receipt.v1"
TRACE_BUNDLE = "orchestrators.receipt.v2"
LEDGER_BUNDLE = "orchestrators.ledger.v1"
ARCHIVE = "orchestrators.archive.v1"
NO_CRYPTOGRAPHY = "the Ed25519 signature (the `cryptography` package is not installed)"


@dataclass
class Report:
    verdict: Verdict
    label: str
    checked: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    def fail(self, reason: str, detail: str, broken_at: int | None = None) -> Report:
        v = self.verdict
        self.verdict = Verdict(False, reason, v.head_hash, v.step_count, broken_at, detail)
        return self


def _ed25519_ok(public_key: bytes, signature: bytes, message: bytes) -> bool | None:
    """True or False; None when it cannot be checked here."""
    if Ed25519PublicKey is None:
        return None
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def open_signed(note: str, keys: list[Verifier]) -> tuple[Checkpoint, bool, Verifier]:
    """The checkpoint in a note signed by one of ``keys``, whether the signature itself was
    checked, and by which key. Raises NoteError when none of them signed it, or when a signature
    line of one of them fails (as the signed-note specification says)."""
    text, signatures = split_note(note)
    for signature in signatures:
        for key in keys:
            if (signature.name, signature.key_id) != (key.name, key.key_id):
                continue
            ok = _ed25519_ok(key.public_key, signature.signature, text.encode("utf-8"))
            if ok is False:
                raise NoteError(f"the signature by {key.name} does not verify")
            return parse_checkpoint(text), ok is True, key
    names = ", ".join(f"{key.name} ({key.key_id.hex()})" for key in keys)
    raise NoteError(f"it is not signed by {names}")


def load_key(argument: str) -> Verifier:
    path = Path(argument)
    text = path.read_text(encoding="utf-8") if path.is_file() else argument
    if text.lstrip().startswith("{"):
        text = str(json.loads(text)["verifier_key"])
    return parse_verifier_key(text.strip())


def load_notes(path: Path) -> list[str]:
    """A signed note, a checkpoint's JSON, or a witness file (one JSON object per line)."""
    text = path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("{"):
        return [text]
    notes = []
    for line in text.splitlines():
        if line.strip():
            notes.append(str(json.loads(line)["note"]))
    if not notes:
        raise ValueError("the checkpoint file holds no checkpoint")
    return notes


def _metadata_ok(steps: list[Any], metadata: object) -> str | None:
    """The bundle's ``metadata`` (what a reader sees first) must be the hashed request step's payload."""
    requests = [json.loads(step["step_json"]) for step in steps if step["step_type"] == "request"]
    if metadata is None or (requests and requests[0].get("payload") == metadata):
        return None
    return "metadata differs from the hashed request step" if requests else "metadata without a request step"


def check_trace(bundle: dict[str, Any], *, v2: bool) -> Report:
    trace, steps = bundle["trace"], bundle["steps"]
    verdict = verify_trace(
        trace["id"],
        steps,
        ledger_entry=bundle.get("ledger_entry"),
        finished=trace.get("finished_at") is not None,
        recorded_count=trace.get("step_count"),
        recorded_head=trace.get("head_hash"),
        # Bundles from versions before these fields were exported lack them: nothing to compare.
        recorded_principal=trace.get("principal", UNRECORDED),
        recorded_finish=trace.get("finished_at"),
        recorded_ledger_seq=trace.get("ledger_seq"),
    )
    report = Report(verdict, f"trace {trace['id']} ({len(steps)} steps)")
    if not verdict.ok:
        return report
    problem = _metadata_ok(steps, trace.get("metadata"))
    if problem:
        return report.fail("metadata_mismatch", problem)
    entry = bundle.get("ledger_entry")
    report.checked.append(
        f"the chain of {len(steps)} steps, the recorded head, count, finish and principal, the metadata"
        + (f", ledger entry {entry['seq']}" if entry else "")
    )
    if v2 and entry is None:
        return report.fail(
            "not_in_log",
            "the trace has not finished: it has no ledger entry, so no signed log vouches for it "
            "(its steps so far chain)",
        )
    return report


def check_log(
    bundle: dict[str, Any], report: Report, keys: list[Verifier], trusted: list[str], proof: dict[str, Any] | None
) -> Report:
    """The ledger entry's inclusion under the bundle's signed checkpoint, and that checkpoint
    against an earlier trusted one."""
    entry, inclusion = bundle["ledger_entry"], bundle.get("inclusion")
    if not inclusion or not bundle.get("checkpoint"):
        detail = str(bundle.get("proof_error") or "the bundle holds no inclusion proof")
        return report.fail("no_inclusion_proof", detail)
    if not keys:
        keys = [parse_verifier_key(bundle["verifier_key"])]
        report.unchecked.append("who signed: the key was taken from the bundle (pin it with --key)")
    try:
        checkpoint, signed, key = open_signed(bundle["checkpoint"]["note"], keys)
    except NoteError as exc:
        return report.fail("checkpoint_invalid", f"the bundle's checkpoint: {exc}")
    report.checked.append(f"the checkpoint of {checkpoint.size} entries ({checkpoint.origin}), signed by {key.name}")
    if not signed:
        report.unchecked.append(NO_CRYPTOGRAPHY + " of the checkpoint")
    text = entry_canonical(entry)
    leaf = leaf_hash(text.encode("utf-8"))
    index = int(entry["seq"]) - 1
    path = [base64.b64decode(item, validate=True) for item in inclusion["audit_path"]]
    if inclusion.get("entry") != text or base64.b64decode(inclusion["leaf_hash"], validate=True) != leaf:
        return report.fail("inclusion_failed", "the proof's leaf is not the ledger entry's")
    if int(inclusion["leaf_index"]) != index or int(inclusion["tree_size"]) != checkpoint.size:
        return report.fail("inclusion_failed", "the proof is for another leaf or another tree than the checkpoint's")
    if not verify_inclusion(leaf, index, checkpoint.size, path, checkpoint.root):
        return report.fail(
            "inclusion_failed", f"the entry is not leaf {index} of the signed tree of {checkpoint.size} entries"
        )
    report.checked.append(f"the ledger entry's inclusion as leaf {index} of that tree (RFC 9162)")
    return check_trusted(bundle, report, keys, checkpoint, trusted, proof)


def check_trusted(
    bundle: dict[str, Any],
    report: Report,
    keys: list[Verifier],
    checkpoint: Checkpoint,
    trusted: list[str],
    proof: dict[str, Any] | None,
) -> Report:
    if not trusted:
        report.unchecked.append("that the log only grew since a checkpoint you trust (--checkpoint)")
        return report
    opened = []
    for note in trusted:
        try:
            earlier, signed, _ = open_signed(note, keys)
        except NoteError as exc:
            return report.fail("checkpoint_invalid", f"a trusted checkpoint: {exc}")
        if not signed:
            report.unchecked.append(NO_CRYPTOGRAPHY + " of a trusted checkpoint")
        opened.append(earlier)
    roots: dict[int, bytes] = {checkpoint.size: checkpoint.root}
    for earlier in opened:
        if roots.setdefault(earlier.size, earlier.root) != earlier.root:
            return report.fail(
                "log_forked", f"two checkpoints of {earlier.size} entries sign different roots", earlier.size
            )
    best = max(opened, key=lambda c: c.size)
    if best.size == checkpoint.size:
        report.checked.append(f"the trusted checkpoint of {best.size} entries is the bundle's")
        return report
    old, new = (best, checkpoint) if best.size < checkpoint.size else (checkpoint, best)
    candidates = [c for c in (bundle.get("consistency"), proof) if c]
    chosen = next((c for c in candidates if (int(c["first"]), int(c["second"])) == (old.size, new.size)), None)
    if chosen is None:
        if best.size > checkpoint.size:
            return report.fail(
                "stale_checkpoint",
                f"the trusted checkpoint holds {best.size} entries, the bundle's {checkpoint.size}: the log may have "
                f"been rolled back; give --proof with the consistency proof from {checkpoint.size} to {best.size}",
            )
        return report.fail(
            "no_consistency_proof",
            f"no consistency proof from {old.size} to {new.size} entries (export?consistency_from={old.size}, "
            "or --proof)",
        )
    hashes = [base64.b64decode(item, validate=True) for item in chosen["proof"]]
    if not verify_consistency(old.size, new.size, old.root, new.root, hashes):
        return report.fail(
            "inconsistent",
            f"the signed tree of {new.size} entries does not extend the one of {old.size}: the history was rewritten",
        )
    report.checked.append(f"consistency from the checkpoint of {old.size} entries to the one of {new.size}")
    return report


def check_envelope(envelope: dict[str, Any], keys: list[Verifier]) -> Report:
    if not keys:
        raise ValueError("an attestation is checked against the log's key: give --key")
    body, signatures = open_envelope(envelope)
    statement = json.loads(body)
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        raise ValueError("the envelope does not hold an orchestrators receipt statement")
    subject = statement["subject"][0]
    head = subject["digest"]["sha256"]
    report = Report(Verdict(True, "intact", head, 0), f"attestation of {subject['name']}")
    mine = [(key, sig) for keyid, sig in signatures for key in keys if keyid in ("", key.key_id.hex())]
    if not mine:
        return report.fail("signature_invalid", "no signature by the keys given")
    results = [(_ed25519_ok(key.public_key, sig, pae(PAYLOAD_TYPE, body)), key) for key, sig in mine]
    good = [key for ok, key in results if ok]
    if not good and any(ok is False for ok, _ in results):
        return report.fail("signature_invalid", "the envelope's signature does not verify")
    if good:
        report.checked.append(f"the DSSE signature over the in-toto statement, by {good[0].name}")
    else:
        report.unchecked.append(NO_CRYPTOGRAPHY + " of the envelope")
    return report


def _archive_report(bundle: dict[str, Any]) -> Report:
    """A retention archive: its ledger range, then each (v1) trace bundle against its entry there."""
    ledger = bundle["ledger"]
    traces, missing = bundle["traces"], bundle.get("missing") or []
    label = f"archive of ledger entries {bundle.get('first_seq')}..{bundle.get('last_seq')} ({len(traces)} traces)"
    verdict = check(ledger, None).verdict
    if not verdict.ok:
        return Report(verdict, label)
    if (ledger.get("first_seq"), ledger.get("last_seq")) != (bundle.get("first_seq"), bundle.get("last_seq")):
        return Report(
            Verdict(False, "archive_mismatch", None, 0, None, "the archive's range differs from its ledger's"), label
        )
    entries = {entry["trace_id"]: entry for entry in ledger["entries"]}
    seen = set()
    for trace_bundle in traces:
        if not isinstance(trace_bundle, dict) or trace_bundle.get("format") != TRACE_BUNDLE_V1:
            raise ValueError("an archive's traces are trace bundles (orchestrators.receipt.v1)")
        trace_id = trace_bundle["trace"]["id"]
        trace_verdict = check(trace_bundle, None).verdict
        if trace_verdict.ok and trace_bundle.get("ledger_entry") != entries.get(trace_id):
            trace_verdict = Verdict(
                False, "ledger_mismatch", None, 0, None, "its ledger entry differs from the archive's range"
            )
        if not trace_verdict.ok:
            where = f" at {trace_verdict.broken_at}" if trace_verdict.broken_at is not None else ""
            detail = f"trace {trace_id}: {trace_verdict.reason}{where}: {trace_verdict.detail}"
            return Report(Verdict(False, trace_verdict.reason, None, 0, trace_verdict.broken_at, detail), label)
        seen.add(trace_id)
    lost = {item["trace_id"]: item.get("state") for item in missing}
    for trace_id in entries:
        if trace_id in seen:
            continue
        what = f"was {lost[trace_id]} when archived" if trace_id in lost else "is not in the archive"
        return Report(Verdict(False, "trace_missing", None, 0, None, f"trace {trace_id} of the range {what}"), label)
    checked = ["the ledger range link by link", f"{len(seen)} trace bundles against their entries in it"]
    return Report(Verdict(True, "intact", verdict.head_hash, len(entries)), label, checked=checked)


def check(
    bundle: object,
    expected_head: str | None,
    keys: list[Verifier] | None = None,
    trusted: list[str] | None = None,
    proof: dict[str, Any] | None = None,
) -> Report:
    if not isinstance(bundle, dict):
        raise ValueError("a bundle is a JSON object")
    kind = bundle.get("format")
    if kind == TRACE_BUNDLE:
        report = check_trace(bundle, v2=True)
        if report.verdict.ok:
            report = check_log(bundle, report, keys or [], trusted or [], proof)
    elif kind == TRACE_BUNDLE_V1:
        report = check_trace(bundle, v2=False)
        report.unchecked.append("inclusion in a signed log (a v1 bundle holds no proof)")
    elif kind == ARCHIVE:
        report = _archive_report(bundle)
    elif kind == LEDGER_BUNDLE:
        entries = bundle["entries"]
        start = GENESIS if bundle.get("first_seq") == 1 else None
        verdict = verify_ledger(entries, start_prev=start)
        if verdict.ok and not entries:
            verdict = Verdict(False, "empty", None, 0, None, "the bundle holds no ledger entries")
        report = Report(verdict, f"ledger entries {bundle.get('first_seq')}..{bundle.get('last_seq')} ({len(entries)})")
    elif "payloadType" in bundle:
        report = check_envelope(bundle, keys or [])
    else:
        raise ValueError(f"unknown bundle format {kind!r}")
    verdict = report.verdict
    if verdict.ok and expected_head and verdict.head_hash != expected_head.lower():
        report.fail("mismatch", "the head differs from the expected hash")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--expected-head", help="a head hash saved earlier, to compare with")
    parser.add_argument("--key", action="append", help="the log's verifier key, or a file holding it (repeatable)")
    parser.add_argument("--checkpoint", type=Path, help="an earlier checkpoint you trust (note, JSON or witness file)")
    parser.add_argument("--proof", type=Path, help="a consistency proof (JSON of /v1/trust/proof/consistency)")
    args = parser.parse_args()
    try:
        keys = [load_key(argument) for argument in args.key or []]
        trusted = load_notes(args.checkpoint) if args.checkpoint else []
        proof = json.loads(args.proof.read_text(encoding="utf-8")) if args.proof else None
        bundle = json.loads(args.bundle.read_text(encoding="utf-8"))
        report = check(bundle, args.expected_head, keys, trusted, proof)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, binascii.Error) as exc:
        print(f"unreadable bundle: {exc}", file=sys.stderr)
        return 2
    verdict = report.verdict
    if verdict.ok:
        print(f"VERIFIED {report.label}: head {verdict.head_hash}")
    else:
        where = f" at {verdict.broken_at}" if verdict.broken_at is not None else ""
        print(f"NOT VERIFIED {report.label}: {verdict.reason}{where}: {verdict.detail}")
    for line in report.checked:
        print(f"  checked: {line}")
    for line in report.unchecked:
        print(f"  not checked: {line}")
    if not verdict.ok:
        return 1
    return 3 if any(line.startswith(NO_CRYPTOGRAPHY) for line in report.unchecked) else 0


if __name__ == "__main__":
    sys.exit(main())
