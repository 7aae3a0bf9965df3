"""The receipt hash chain: construction and verification. Standard library only, so that
``scripts/verify_receipts.py`` can check an exported bundle with a bare ``python3``.

Construction (computed when a step is written, never on read):

* a step's canonical JSON is ``{"created_at", "payload", "seq", "step_type", "trace_id"}`` with
  sorted keys, no spaces, UTF-8; it is stored verbatim, so verifying never re-serialises;
* ``step_hash = SHA-256(prev_hash || canonical)`` (hex; ``||`` is string concatenation), with
  ``prev_hash`` the previous step's hash, 64 zeros for the first step;
* a finished trace's head (its last step hash and step count), its finish time and its principal
  are appended to a global ledger: ``entry_hash = SHA-256(prev_entry_hash || canonical({"created_at",
  "head_hash", "principal", "seq", "step_count", "trace_id"}))``, so removing a whole trace breaks
  the ledger. Entries written before the principal was recorded (version 1) lack that key and
  verify as they were written; an entry's version is whether its row holds a principal.
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


_PRINCIPALS_JSON: dict[str, str] = {}  # principal -> its JSON string: a few names, encoded once each
_PRINCIPALS_CACHED = 4096


def _json_string(value: str) -> str:
    encoded = _PRINCIPALS_JSON.get(value)
    if encoded is None:
        encoded = json.dumps(value, ensure_ascii=False)
        if len(_PRINCIPALS_JSON) < _PRINCIPALS_CACHED:
            _PRINCIPALS_JSON[value] = encoded
    return encoded


def ledger_canonical(
    seq: int,
    trace_id: str,
    head_hash: str,
    step_count: int,
    created_at: str,
    *,
    principal: str | None = None,
    plain: bool = False,
) -> str:
    """A ledger entry's canonical text: version 2 with ``principal``, version 1 (as written
    before the entry recorded it) without. It is also the entry's Merkle leaf.

    ``plain``: the caller vouches that the ids, hash and time need no JSON escaping (the writer's
    own UUIDs, hex hashes and ISO times); stored values being verified are always checked."""
    if plain or all(_PLAIN.fullmatch(v) for v in (created_at, head_hash, trace_id)):
        # The same bytes canonical() would produce, without a JSON encoder: ids, hex hashes and
        # ISO times need no escaping. (One ledger entry per request: this is on the writer's path.)
        if principal is None:
            return (
                f'{{"created_at":"{created_at}","head_hash":"{head_hash}","seq":{seq},'
                f'"step_count":{step_count},"trace_id":"{trace_id}"}}'
            )
        return (
            f'{{"created_at":"{created_at}","head_hash":"{head_hash}","principal":{_json_string(principal)},'
            f'"seq":{seq},"step_count":{step_count},"trace_id":"{trace_id}"}}'
        )
    entry: dict[str, Any] = {
        "created_at": created_at,
        "head_hash": head_hash,
        "seq": seq,
        "step_count": step_count,
        "trace_id": trace_id,
    }
    if principal is not None:
        entry["principal"] = principal
    return canonical(entry)


def entry_canonical(entry: Mapping[str, Any]) -> str:
    """The canonical text of a stored (or exported) ledger entry, of whichever version it is."""
    return ledger_canonical(
        int(entry["seq"]),
        entry["trace_id"],
        entry["head_hash"],
        int(entry["step_count"]),
        entry["created_at"],
        principal=entry.get("principal"),
    )


def request_principal(steps: Sequence[Mapping[str, Any]]) -> tuple[bool, str | None]:
    """The principal the hashed request step records: (found, principal). Only a verified chain's
    answer means anything."""
    for step in steps:
        if step["step_type"] == "request":
            try:
                payload = json.loads(step["step_json"]).get("payload")
            except (TypeError, ValueError, AttributeError):
                return False, None
            if isinstance(payload, dict) and isinstance(payload.get("principal"), str):
                return True, payload["principal"]
            return False, None
    return False, None


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
        if link(entry["prev_hash"], entry_canonical(entry)) != entry["entry_hash"]:
            return Verdict(False, "ledger_broken", None, len(entries), seq, "entry_hash does not match its content")
        expected_prev, previous_seq = entry["entry_hash"], seq
    return Verdict(True, "intact", expected_prev, len(entries))


UNRECORDED: Any = object()
"""A column the bundle or row does not carry (so there is nothing to compare)."""


def verify_trace(
    trace_id: str,
    steps: Sequence[Mapping[str, Any]],
    *,
    ledger_entry: Mapping[str, Any] | None,
    finished: bool,
    recorded_count: int | None = None,
    recorded_head: str | None = None,
    recorded_principal: Any = UNRECORDED,
    recorded_finish: Any = UNRECORDED,
    recorded_ledger_seq: Any = UNRECORDED,
) -> Verdict:
    """A trace's chain, then every column that verification or access control relies on against
    what is hashed: the recorded principal against the hashed request step's, the recorded head,
    step count, finish time and ledger position against the chain and the ledger entry (which, in
    version 2, commits to the principal too).

    A trace counts as finished when its record says so or when the ledger lists it: a finished
    trace's record forged back to "not finished" must not skip the ledger's check.
    """
    verdict = verify_steps(trace_id, steps)
    if not verdict.ok:
        return verdict
    found, principal = request_principal(steps)
    if recorded_principal is not UNRECORDED and (not found or recorded_principal != principal):
        what = "the hashed request step records no principal" if not found else "the hashed request step's differs"
        return Verdict(
            False,
            "principal_mismatch",
            verdict.head_hash,
            verdict.step_count,
            1,
            f"the trace's recorded principal is not the one it was served for: {what}",
        )
    if not (finished or ledger_entry is not None):
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

    def mismatch(detail: str | None) -> Verdict:
        return Verdict(False, "ledger_mismatch", verdict.head_hash, verdict.step_count, None, detail)

    if (ledger_entry["head_hash"], int(ledger_entry["step_count"])) != (verdict.head_hash, verdict.step_count):
        return mismatch("the ledger recorded a different head for this trace")
    if ledger_entry["trace_id"] != trace_id:
        return mismatch("the ledger entry is another trace's")
    entry_principal = ledger_entry.get("principal")
    if entry_principal is not None and (not found or entry_principal != principal):
        return mismatch("the ledger recorded another principal for this trace")
    if recorded_finish not in (UNRECORDED, None) and recorded_finish != ledger_entry["created_at"]:
        return mismatch("the trace's recorded finish differs from the ledger's")
    if recorded_ledger_seq not in (UNRECORDED, None) and int(recorded_ledger_seq) != int(ledger_entry["seq"]):
        return mismatch("the trace's recorded ledger position differs from its entry's")
    entry_check = verify_ledger([ledger_entry])
    if not entry_check.ok:
        return mismatch(entry_check.detail)
    return verdict


def verify_record(
    trace_id: str,
    trace: Mapping[str, Any] | None,
    steps: Sequence[Mapping[str, Any]],
    entry: Mapping[str, Any] | None,
) -> Verdict:
    """A stored trace's verdict from what the database holds of it: its record (whose columns are
    checked against what is hashed), its steps and its ledger entry."""
    if trace is None:
        if entry is not None:
            return Verdict(
                False, "trace_deleted", None, len(steps), None, "the ledger lists this trace but its record is gone"
            )
        return Verdict(False, "chain_broken", None, len(steps), None, "the trace record is missing")
    return verify_trace(
        trace_id,
        steps,
        ledger_entry=entry,
        finished=trace.get("finished_at") is not None,
        recorded_count=trace.get("step_count"),
        recorded_head=trace.get("head_hash"),
        recorded_principal=trace.get("principal"),
        recorded_finish=trace.get("finished_at"),
        recorded_ledger_seq=trace.get("ledger_seq"),
    )
