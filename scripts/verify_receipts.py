#!/usr/bin/env python3
"""Verify an exported receipt bundle offline, without the server: ``python3 scripts/verify_receipts.py BUNDLE``.

A trace bundle (``GET /v1/trust/trace/{id}/export``) is checked step by step: every step's hash is
recomputed from its stored canonical text and must link to the previous one; the recorded head
and step count, the trace's ledger entry, and the ``metadata`` shown (its hashed request step's
payload) must agree with the chain. A ledger bundle (``GET /v1/trust/ledger?from=&to=``) is
checked link by link; one with no entries verifies nothing and is not verified.

``--expected-head HASH`` also compares the head (a trace's last step hash, or a ledger range's
last entry hash) with one you saved earlier: that is what catches a rewrite by someone who
controls the database, which no self-contained check can.

Needs only the Python standard library (the chain module it imports is stdlib-only).
Exit status: 0 verified, 1 not verified, 2 unreadable bundle.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.tracing.chain import GENESIS, UNRECORDED, Verdict, verify_ledger, verify_trace

TRACE_BUNDLE = "orchestrators.receipt.v1"
LEDGER_BUNDLE = "orchestrators.ledger.v1"


def _metadata_verdict(steps: list, metadata: object, verdict: Verdict) -> Verdict:
    """The bundle's ``metadata`` (what a reader sees first) must be the hashed request step's payload."""
    requests = [json.loads(step["step_json"]) for step in steps if step["step_type"] == "request"]
    if metadata is None or (requests and requests[0].get("payload") == metadata):
        return verdict
    detail = "metadata differs from the hashed request step" if requests else "metadata without a request step"
    return Verdict(False, "metadata_mismatch", verdict.head_hash, verdict.step_count, None, detail)


def check(bundle: object, expected_head: str | None) -> tuple[Verdict, str]:
    if not isinstance(bundle, dict):
        raise ValueError("a bundle is a JSON object")
    kind = bundle.get("format")
    if kind == TRACE_BUNDLE:
        trace = bundle["trace"]
        verdict = verify_trace(
            trace["id"],
            bundle["steps"],
            ledger_entry=bundle.get("ledger_entry"),
            finished=trace.get("finished_at") is not None,
            recorded_count=trace.get("step_count"),
            recorded_head=trace.get("head_hash"),
            # Bundles from versions before these fields were exported lack them: nothing to compare.
            recorded_principal=trace.get("principal", UNRECORDED),
            recorded_finish=trace.get("finished_at"),
        )
        if verdict.ok:
            verdict = _metadata_verdict(bundle["steps"], trace.get("metadata"), verdict)
        label = f"trace {trace['id']} ({len(bundle['steps'])} steps)"
    elif kind == LEDGER_BUNDLE:
        entries = bundle["entries"]
        start = GENESIS if bundle.get("first_seq") == 1 else None
        verdict = verify_ledger(entries, start_prev=start)
        if verdict.ok and not entries:
            verdict = Verdict(False, "empty", None, 0, None, "the bundle holds no ledger entries")
        label = f"ledger entries {bundle.get('first_seq')}..{bundle.get('last_seq')} ({len(entries)})"
    else:
        raise ValueError(f"unknown bundle format {kind!r}")
    if verdict.ok and expected_head and verdict.head_hash != expected_head.lower():
        verdict = Verdict(
            False, "mismatch", verdict.head_hash, verdict.step_count, None, "the head differs from the expected hash"
        )
    return verdict, label


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--expected-head", help="a head hash saved earlier, to compare with")
    args = parser.parse_args()
    try:
        bundle = json.loads(args.bundle.read_text(encoding="utf-8"))
        verdict, label = check(bundle, args.expected_head)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        print(f"unreadable bundle: {exc}", file=sys.stderr)
        return 2
    if verdict.ok:
        print(f"VERIFIED {label}: head {verdict.head_hash}")
        return 0
    where = f" at {verdict.broken_at}" if verdict.broken_at is not None else ""
    print(f"NOT VERIFIED {label}: {verdict.reason}{where}: {verdict.detail}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
