"""The receipt hash chain: construction and verification. Standard library only, so that
``scripts/verify_receipts.py`` can check an exported bundle with a bare ``python3``.

Construction (computed when a step is written, never on read):

* a step's canonical JSON is ``{"created_at", "payload", "seq", "step_type", "trace_id"}`` with
  sorted keys, no spaces, UTF-8; it is stored verbatim, so verifying never re-serialises;
* ``step_hash = SHA-256(prev_hash || canonical)`` (hex; ``||`` is string concatenation), with
  ``prev_hash`` the previous step's hash, 64 zeros for the first step;
* a finished trace's head (its last step hash and step count) is appended to a global ledger:
  ``entry_hash = SHA-256(prev_entry_hash || canonical({"created_at", "head_hash", "seq",
  "step_count", "trace_id"}))``, so removing a whole trace breaks the ledger.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
_PLAIN = re.compile(r"[A-Za-z0-9:.+\-]*")  # strings JSON encodes as themselves


def canonical(obj: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 (not ASCII-escaped)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def link(prev_hash: str, canonical_text: str) -> str:
    return hashlib.sha256((prev_hash + canonical_text).encode("utf-8")).hexdigest()


def step_canonical(trace_id: str, seq: int, step_type: str, created_at: str, payload: Any) -> str:
    return canonical(
        {"created_at": created_at, "payload": payload, "seq": seq, "step_type": step_type, "trace_id": trace_id}
    )


def ledger_canonical(
    seq: int, trace_id: str, head_hash: str, step_count: int, created_at: str, *, plain: bool = False
) -> str:
    """``plain``: the caller vouches that the strings need no JSON escaping (the writer's own
    UUIDs, hex hashes and ISO times); stored values being verified are always checked."""
    if plain or all(_PLAIN.fullmatch(v) for v in (created_at, head_hash, trace_id)):
        # The same bytes canonical() would produce, without a JSON encoder: ids, hex hashes and
        # ISO times need no escaping. (One ledger entry per request: this is on the writer's path.)
        return (
            f'{{"created_at":"{created_at}","head_hash":"{head_hash}","seq":{seq},'
            f'"step_count":{step_count},"trace_id":"{trace_id}"}}'
        )
    return canonical(
        {"created_at": created_at, "head_hash": head_hash, "seq": seq, "step_count": step_count, "trace_id": trace_id}
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a verification. ``broken_at`` is the first bad step (or ledger) sequence."""

    ok: bool
    reason: str  # "intact" or what is wrong
    head_hash: str | None
    step_count: int
    broken_at: int | None = None
    detail: str | None = None


def verify_steps(trace_id: str, steps: Sequence[Mapping[str, Any]]) -> Verdict:
    """Recompute a trace's chain from its stored rows (ordered by ``seq``).

    Each row: ``seq, step_type, created_at, step_json`` (the canonical text), ``prev_hash``,
    ``step_hash``. Detects edited payloads or columns, deleted, reordered and inserted steps.
    """
    expected_prev = GENESIS
    for index, step in enumerate(steps, start=1):
        seq = int(step["seq"])
        if seq != index:
            what = "missing" if seq > index else "duplicated or reordered"
            return Verdict(False, "chain_broken", None, len(steps), index, f"step {index} is {what} (found seq {seq})")
        if step["prev_hash"] != expected_prev:
            return Verdict(False, "chain_broken", None, len(steps), seq, "prev_hash does not link to the previous step")
        try:
            body = json.loads(step["step_json"])
        except (TypeError, ValueError):
            return Verdict(False, "chain_broken", None, len(steps), seq, "the stored step is not JSON")
        fields = (body.get("trace_id"), body.get("seq"), body.get("step_type"), body.get("created_at"))
        if fields != (trace_id, seq, step["step_type"], step["created_at"]):
            return Verdict(False, "chain_broken", None, len(steps), seq, "stored columns differ from the hashed step")
        if link(expected_prev, step["step_json"]) != step["step_hash"]:
            return Verdict(False, "chain_broken", None, len(steps), seq, "step_hash does not match its content")
        expected_prev = step["step_hash"]
    if not steps:
        return Verdict(False, "chain_broken", None, 0, 1, "the trace has no steps")
    return Verdict(True, "intact", expected_prev, len(steps))


def verify_ledger(entries: Sequence[Mapping[str, Any]], *, start_prev: str | None = None) -> Verdict:
    """Check a contiguous run of ledger entries (ordered by ``seq``): links and entry hashes.

    ``start_prev`` is the entry hash before the first one (GENESIS when the run starts at seq 1);
    None trusts the first entry's ``prev_hash`` (a range exported from the middle of the ledger).
    """
    expected_prev = start_prev
    previous_seq: int | None = None
    for entry in entries:
        seq = int(entry["seq"])
        if previous_seq is not None and seq != previous_seq + 1:
            return Verdict(False, "ledger_broken", None, len(entries), previous_seq + 1, "a ledger entry is missing")
        if expected_prev is not None and entry["prev_hash"] != expected_prev:
            return Verdict(False, "ledger_broken", None, len(entries), seq, "prev_hash does not link")
        text = ledger_canonical(
            seq, entry["trace_id"], entry["head_hash"], int(entry["step_count"]), entry["created_at"]
        )
        if link(entry["prev_hash"], text) != entry["entry_hash"]:
            return Verdict(False, "ledger_broken", None, len(entries), seq, "entry_hash does not match its content")
        expected_prev, previous_seq = entry["entry_hash"], seq
    return Verdict(True, "intact", expected_prev, len(entries))


def verify_trace(
    trace_id: str,
    steps: Sequence[Mapping[str, Any]],
    *,
    ledger_entry: Mapping[str, Any] | None,
    finished: bool,
    recorded_count: int | None = None,
    recorded_head: str | None = None,
) -> Verdict:
    """A trace's chain, then its recorded head and its ledger entry (for a finished trace).

    A trace counts as finished when its record says so or when the ledger lists it: a finished
    trace's record forged back to "not finished" must not skip the ledger's check.
    """
    verdict = verify_steps(trace_id, steps)
    if not verdict.ok or not (finished or ledger_entry is not None):
        return verdict
    if recorded_count is not None and recorded_count != verdict.step_count:
        return Verdict(
            False,
            "chain_broken",
            verdict.head_hash,
            verdict.step_count,
            min(recorded_count, verdict.step_count) + 1,
            f"the trace recorded {recorded_count} steps but {verdict.step_count} remain (truncated)",
        )
    if recorded_head is not None and recorded_head != verdict.head_hash:
        return Verdict(
            False,
            "chain_broken",
            verdict.head_hash,
            verdict.step_count,
            verdict.step_count,
            "the recorded head hash differs from the chain",
        )
    if ledger_entry is None:
        return Verdict(
            False,
            "ledger_missing",
            verdict.head_hash,
            verdict.step_count,
            None,
            "the finished trace has no ledger entry",
        )
    if (ledger_entry["head_hash"], int(ledger_entry["step_count"])) != (verdict.head_hash, verdict.step_count):
        return Verdict(
            False,
            "ledger_mismatch",
            verdict.head_hash,
            verdict.step_count,
            None,
            "the ledger recorded a different head for this trace",
        )
    entry_check = verify_ledger([ledger_entry])
    if not entry_check.ok:
        return Verdict(False, "ledger_mismatch", verdict.head_hash, verdict.step_count, None, entry_check.detail)
    return verdict
