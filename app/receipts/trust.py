"""The trust panel and audit: read receipts, verify them, export them for offline checks."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from app.errors import InvalidRequest, NotFound, ServiceUnavailable
from app.policies import PolicySnapshot
from app.receipts import attest
from app.receipts.chain import GENESIS, Verdict, entry_canonical, request_principal, verify_ledger, verify_record
from app.receipts.checkpoints import Checkpointer, checkpoint_view
from app.receipts.logcheck import LogProblem, check_log, open_checkpoint, witness_tail
from app.receipts.merkle import (
    Node,
    Range,
    complete_parts,
    consistency_ranges,
    inclusion_ranges,
    range_hash,
    verify_inclusion,
)
from app.receipts.notes import NoteError, Verifier, parse_verifier_key
from app.receipts.retention import PruneLog, pruned_verdict
from app.receipts.store import TraceStore, TreeIncomplete, entry_leaf
from app.receipts.tracer import Tracer
from app.scrub import cap_text

TRACE_BUNDLE = "orchestrators.receipt.v2"
LEDGER_BUNDLE = "orchestrators.ledger.v1"
MAX_LEDGER_RANGE = 10_000  # entries per ledger export or verification call
MAX_CHECKPOINTS = 1000  # checkpoints per listing
RECENT_TRACES_CHECKED = 1000  # ledger verify: the newest traces whose ledger entries must exist
TRACES_PER_READ = 500  # ledger verify reads the traces it lists, and their steps, this many at a time


def check_trace_id(trace_id: str) -> str:
    try:
        return str(uuid.UUID(trace_id))
    except ValueError:
        raise InvalidRequest(
            f"'{trace_id[:64]}' is not a trace id (a UUID, as returned in `request_id`).",
            param="trace_id",
            code="invalid_trace_id",
        ) from None


def _cap(value: Any, max_chars: int) -> Any:
    """Display cap: long strings in a payload are shortened (redaction happened at write time)."""
    if isinstance(value, str):
        return cap_text(value, max_chars)[0]
    if isinstance(value, dict):
        return {key: _cap(item, max_chars) for key, item in value.items()}
    if isinstance(value, list):
        return [_cap(item, max_chars) for item in value]
    return value


def _metadata(trace: dict[str, Any], steps: list[dict[str, Any]]) -> Any:
    """A trace's request fields: the payload of its request step (so covered by the chain); traces
    written by versions that kept a copy in ``metadata_json`` and lost that step show the copy."""
    for step in steps:
        if step["step_type"] == "request":
            return orjson.loads(step["step_json"]).get("payload")
    return orjson.loads(trace["metadata_json"]) if trace["metadata_json"] else None


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _tree_incomplete(exc: TreeIncomplete) -> InvalidRequest:
    return InvalidRequest(
        f"The receipt log cannot prove this: {exc}. The database was edited or lost rows; "
        "verify the ledger (/v1/trust/ledger/verify).",
        status=409,
        code="tree_incomplete",
    )


def _verdict_fields(verdict: Verdict) -> dict[str, Any]:
    return {"broken_at": verdict.broken_at, "detail": verdict.detail}


def _pruned_fields(trace: dict[str, Any] | None) -> dict[str, Any]:
    """When the retention job pruned the trace: the date, and its batch's signed note with whether
    it vouches for the mark (the verdict's reason says ``pruned``)."""
    if trace is None or "pruned_at" not in trace:
        return {}
    return {
        "pruned_at": trace["pruned_at"],
        "prune_signature": trace["prune_signature"],
        "prune_note": trace["prune_note"],
    }


class TrustService:
    def __init__(
        self,
        store: TraceStore,
        tracer: Tracer,
        policies: PolicySnapshot,
        *,
        max_events: int,
        max_value_chars: int,
        debug: bool,
        checkpointer: Checkpointer | None = None,
        pruned: PruneLog | None = None,
    ) -> None:
        self.checkpointer = checkpointer
        self.pruned = pruned
        self.store = store
        self.tracer = tracer
        self.policies = policies
        self.max_events = max_events
        self.max_value_chars = max_value_chars
        self.debug = debug

    def _event(self, row: dict[str, Any], *, debug: bool) -> dict[str, Any]:
        body = orjson.loads(row["step_json"])
        event = {
            "trace_id": body["trace_id"],
            "seq": row["seq"],
            "step_type": row["step_type"],
            "created_at": row["created_at"],
            "payload": _cap(body.get("payload"), self.max_value_chars),
            "prev_hash": row["prev_hash"],
            "step_hash": row["step_hash"],
        }
        if debug and self.debug:
            event["payload_size"] = len(row["step_json"])
        return event

    async def events(
        self,
        *,
        limit: int,
        step_types: list[str],
        trace_id: str | None,
        viewer: str | None = None,
        debug: bool = False,
    ) -> dict[str, Any]:
        """``viewer``: the principal whose receipts are shown; None shows everyone's (the owner)."""
        bounded = min(limit, self.max_events)
        # One more than asked tells whether there is more (`truncated`) without a count query.
        rows = await self.store.events(
            limit=bounded + 1,
            step_types=step_types,
            trace_id=check_trace_id(trace_id) if trace_id else None,
            principal=viewer,
        )
        shown = rows[:bounded]
        if viewer is not None and shown:
            # The SQL filter trusts the unhashed principal column: keep only the steps of traces
            # whose hashed request step names the viewer too.
            requests = await self.store.request_steps(sorted({row["trace_id"] for row in shown}))
            mine = {tid for tid, steps in requests.items() if request_principal(steps) == (True, viewer)}
            shown = [row for row in shown if row["trace_id"] in mine]
        events = [self._event(row, debug=debug) for row in shown]
        return {"events": events, "count": len(events), "limit": bounded, "truncated": len(rows) > bounded}

    async def _load(
        self, trace_id: str, viewer: str | None
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any] | None]:
        """A trace's record, steps and ledger entry. Another principal's trace (or one whose record
        is gone, so whose owner is unknown) answers a ``viewer`` the same 404 as an unknown id."""
        trace_id = check_trace_id(trace_id)
        await self.tracer.flush()
        trace = await self.store.trace(trace_id)
        if trace is None and self.pruned is not None:
            # What the retention job kept of a pruned trace (marked with its `pruned_at`).
            trace = await self.pruned.as_trace(trace_id)
        if viewer is not None and (trace is None or trace["principal"] != viewer):
            raise NotFound(f"No receipt for trace '{trace_id}'.", param="trace_id", code="trace_not_found")
        steps = await self.store.steps(trace_id)
        entry = await self.store.ledger_entry(trace_id)
        if viewer is not None and not self._owned(trace, steps, entry, viewer):
            raise NotFound(f"No receipt for trace '{trace_id}'.", param="trace_id", code="trace_not_found")
        if trace is None and not steps and entry is None:
            raise NotFound(f"No receipt for trace '{trace_id}'.", param="trace_id", code="trace_not_found")
        return trace, steps, entry

    @staticmethod
    def _owned(
        trace: dict[str, Any] | None, steps: list[dict[str, Any]], entry: dict[str, Any] | None, viewer: str
    ) -> bool:
        """The principal column decides access, and it is not hashed: it must agree with the one
        the hashed request step records (a trace without one is nobody's but the owner's). A
        pruned trace has no steps left: its ledger entry's principal (hashed, in v2 entries) must
        agree instead."""
        if trace is not None and "pruned_at" in trace:
            return entry is not None and entry.get("principal") in (None, viewer)
        return request_principal(steps) == (True, viewer)

    def _verdict(
        self, trace_id: str, trace: dict[str, Any] | None, steps: list[dict[str, Any]], entry: dict[str, Any] | None
    ) -> Verdict:
        if trace is not None and "pruned_at" in trace:
            return pruned_verdict(trace, steps, entry)
        return verify_record(trace_id, trace, steps, entry)

    async def _checked(
        self, trace_id: str, trace: dict[str, Any] | None, steps: list[dict[str, Any]], entry: dict[str, Any] | None
    ) -> Verdict:
        """The trace's verdict, held to the signed log too: a finished trace's ledger entry must be
        a leaf of the latest checkpoint's tree (when that covers it) under the root the service's
        key signed, which catches its history rewritten with every hash recomputed; one that looks
        unfinished must not sit in a log shorter than that checkpoint (its finish and ledger entry
        may have been erased with the log's newest entries)."""
        verdict = self._verdict(trace_id, trace, steps, entry)
        if not verdict.ok:
            return verdict
        latest = await self.store.latest_checkpoint()  # before the size: the log only grows
        if latest is None:
            return verdict
        signed = int(latest["tree_size"])

        def failed(reason: str, detail: str) -> Verdict:
            return Verdict(False, reason, verdict.head_hash, verdict.step_count, None, detail)

        if entry is None:
            size = await self.store.tree_size()
            if signed > size:
                return failed(
                    "log_truncated",
                    f"the trace looks unfinished, but the log holds {size} entries where a signed checkpoint "
                    f"holds {signed}: its finish may have been erased",
                )
            return verdict
        if signed < int(entry["seq"]):
            return verdict  # finished after the latest checkpoint: the next one will hold it
        try:
            checkpoint = open_checkpoint(latest["note"], await self._verifiers())
        except NoteError as exc:
            return failed("checkpoint_invalid", f"the latest checkpoint: {exc}")
        if checkpoint.size > await self.store.tree_size():
            return failed("log_truncated", f"the log is shorter than its signed checkpoint of {checkpoint.size}")
        index = int(entry["seq"]) - 1
        try:
            hashes = await self._hashes([*inclusion_ranges(index, checkpoint.size)])
        except InvalidRequest as exc:
            return failed("tree_incomplete", exc.message)
        if not verify_inclusion(entry_leaf(entry), index, checkpoint.size, hashes, checkpoint.root):
            return failed(
                "checkpoint_mismatch",
                f"the trace's ledger entry is not leaf {index} of the tree of {checkpoint.size} entries the log "
                "signed: its history was rewritten",
            )
        return verdict

    async def report(self, trace_id: str, *, viewer: str | None = None, debug: bool = False) -> dict[str, Any]:
        trace, steps, entry = await self._load(trace_id, viewer)
        shown = steps[-self.max_events :]
        verdict = await self._checked(check_trace_id(trace_id), trace, steps, entry)
        metadata = _metadata(trace, steps) if trace else None
        return {
            "trace_id": check_trace_id(trace_id),
            "created_at": trace["created_at"] if trace else None,
            "finished_at": trace.get("finished_at") if trace else None,
            "metadata": _cap(metadata, self.max_value_chars),
            "steps": [self._event(row, debug=debug) for row in shown],
            "step_count": len(steps),
            "steps_truncated": len(shown) < len(steps),
            "head_hash": verdict.head_hash or (steps[-1]["step_hash"] if steps else None),
            "ledger_seq": entry["seq"] if entry else None,
            "verified": verdict.ok,
            "reason": verdict.reason,
            **_pruned_fields(trace),
        }

    async def verify(self, trace_id: str, expected_hash: str | None, *, viewer: str | None = None) -> dict[str, Any]:
        trace, steps, entry = await self._load(trace_id, viewer)
        verdict = await self._checked(check_trace_id(trace_id), trace, steps, entry)
        result: dict[str, Any] = {
            "trace_id": check_trace_id(trace_id),
            "verified": verdict.ok,
            "reason": verdict.reason,
            "head_hash": verdict.head_hash,
            "step_count": verdict.step_count,
            "ledger_seq": entry["seq"] if entry else None,
            **_verdict_fields(verdict),
            **_pruned_fields(trace),
        }
        if verdict.ok and expected_hash is not None:
            matches = expected_hash.strip().lower() == verdict.head_hash
            result.update(verified=matches, reason="match" if matches else "mismatch")
        return result

    async def export(
        self, trace_id: str, *, viewer: str | None = None, consistency_from: int | None = None
    ) -> dict[str, Any]:
        """The trace as a self-contained receipt (``orchestrators.receipt.v2``): its record, steps
        and ledger entry, the entry's inclusion proof in the tree of the latest signed checkpoint,
        that checkpoint and the key that signed it; with ``consistency_from``, also the proof that
        the tree of that many entries (an earlier checkpoint the reader trusts) is a prefix."""
        trace, steps, entry = await self._load(trace_id, viewer)
        if trace is not None and "pruned_at" in trace:
            raise NotFound(
                f"The steps of trace '{trace_id}' were deleted by the retention policy on {trace['pruned_at']};"
                " its ledger entry remains (its inclusion proof: /v1/trust/proof/inclusion), and the archive"
                " written before pruning, if one was kept, holds its bundle.",
                code="trace_pruned",
            )
        if trace is None:
            raise NotFound(
                f"The receipt of trace '{trace_id}' was deleted; only its ledger entry remains.", code="trace_deleted"
            )
        signer = self._signer()
        bundle: dict[str, Any] = {
            "format": TRACE_BUNDLE,
            "exported_at": datetime.now(UTC).isoformat(),
            "trace": {
                "id": trace["id"],
                "principal": trace.get("principal"),
                "created_at": trace["created_at"],
                "finished_at": trace.get("finished_at"),
                "step_count": trace.get("step_count"),
                "head_hash": trace.get("head_hash"),
                "ledger_seq": trace.get("ledger_seq"),
                "metadata": _metadata(trace, steps),
            },
            "steps": steps,
            "ledger_entry": entry,
            "inclusion": None,
            "checkpoint": None,
            "consistency": None,
            "verifier_key": signer.signer.verifier.text,
        }
        if entry is None:
            return bundle  # not finished: not in the log yet, which the verifier says
        checkpoint = await self._covering_checkpoint(int(entry["seq"]))
        if checkpoint is None:
            return bundle
        size = int(checkpoint["tree_size"])
        bundle["checkpoint"] = checkpoint_view(checkpoint)
        try:
            bundle["inclusion"] = await self._inclusion(entry, size)
            if consistency_from is not None:
                if consistency_from > size:
                    raise InvalidRequest(
                        f"`consistency_from` ({consistency_from}) is after the checkpoint's {size} entries.",
                        param="consistency_from",
                        code="invalid_tree_size",
                    )
                bundle["consistency"] = await self.consistency_proof(consistency_from, size)
        except InvalidRequest as exc:
            if exc.code != "tree_incomplete":
                raise
            bundle["proof_error"] = exc.message
        return bundle

    async def _covering_checkpoint(self, seq: int) -> dict[str, Any] | None:
        """The latest checkpoint if it covers ledger entry ``seq``, else one signed now."""
        latest = await self.store.latest_checkpoint()
        if latest is None or int(latest["tree_size"]) < seq:
            try:
                latest = await self._signer().sign()
            except TreeIncomplete:
                return None
        return latest if latest is not None and int(latest["tree_size"]) >= seq else None

    async def attestation(self, trace_id: str, *, viewer: str | None = None) -> dict[str, Any]:
        """The trace as an in-toto Statement in a DSSE envelope signed with the log's key."""
        trace, steps, entry = await self._load(trace_id, viewer)
        if trace is None:
            raise NotFound(
                f"The receipt of trace '{trace_id}' was deleted; only its ledger entry remains.", code="trace_deleted"
            )
        verdict = await self._checked(check_trace_id(trace_id), trace, steps, entry)
        if not verdict.ok or verdict.head_hash is None:
            # Signing what fails verification would vouch for it.
            raise InvalidRequest(
                f"The receipt of trace '{trace_id}' does not verify ({verdict.reason}); it is not attested.",
                status=409,
                code="receipt_not_verified",
            )
        signer = self._signer()
        checkpoint = await self._covering_checkpoint(int(entry["seq"])) if entry else None
        body = orjson.dumps(
            attest.statement(
                trace,
                steps,
                head_hash=verdict.head_hash,
                ledger_entry=entry,
                entry_text=entry_canonical(entry) if entry else None,
                checkpoint=checkpoint["note"] if checkpoint else None,
            ),
            option=orjson.OPT_SORT_KEYS,
        )
        signature = signer.signer.sign_bytes(attest.pae(attest.PAYLOAD_TYPE, body))
        return attest.envelope(body, signature, signer.signer.verifier.key_id.hex())

    async def _ledger_top(self) -> tuple[int, str | None]:
        """The newest ledger entry's sequence number (0: empty) and hash."""
        head = await self.store.ledger_head()
        return (int(head["seq"]), str(head["entry_hash"])) if head else (0, None)

    @staticmethod
    def _ledger_bounds(first: int | None, last: int | None, top: int) -> tuple[int, int]:
        """The range asked for, clamped to the ledger (no ``from``: the newest entries up to ``to``,
        at most MAX_LEDGER_RANGE); a range that holds no entry is 404 (verifying or exporting
        nothing must not read as "verified")."""
        if first is not None and last is not None and first > last:
            raise InvalidRequest(f"`from` ({first}) is after `to` ({last}).", param="from", code="invalid_range")
        if first is None:  # the newest entries (up to `to`), at most one call's worth
            first = max(1, min(last or top, top) - MAX_LEDGER_RANGE + 1)
        if first > top:
            message = f"The ledger ends at entry {top}." if top else "The ledger is empty: no trace has finished yet."
            raise NotFound(message, param="from", code="ledger_range_empty")
        last = min(last or top, top)
        if last - first + 1 > MAX_LEDGER_RANGE:
            raise InvalidRequest(
                f"At most {MAX_LEDGER_RANGE} ledger entries per call.", param="to", code="range_too_large"
            )
        return first, last

    async def export_ledger(self, first: int | None, last: int | None) -> dict[str, Any]:
        await self.tracer.flush()
        first, last = self._ledger_bounds(first, last, (await self._ledger_top())[0])
        return {
            "format": LEDGER_BUNDLE,
            "exported_at": datetime.now(UTC).isoformat(),
            "first_seq": first,
            "last_seq": last,
            "entries": await self.store.ledger_range(first, last),
        }

    async def verify_ledger(self, first: int | None, last: int | None) -> dict[str, Any]:
        """The ledger's links and hashes, that its newest entries are all there, that every trace
        it lists verifies (its chain, the columns recorded beside it, its principal, its ledger
        entry), and that the log holds the roots its latest checkpoint and the witness file's
        signed."""
        await self.tracer.flush()
        # Read before the head: a batch committed in between adds its traces and their entries at
        # once, so a trace can record an entry past the head read after it only if that entry was
        # deleted. Checkpoints likewise: one signed in between is no larger than the head.
        latest = await self.store.latest_checkpoint()
        witnessed = await asyncio.to_thread(witness_tail, self.checkpointer.witness_path if self.checkpointer else None)
        recorded = await self.store.newest_recorded_ledger_seq(RECENT_TRACES_CHECKED)
        top, top_hash = await self._ledger_top()
        if recorded is not None and recorded > top and (last is None or last > top):
            # A chain cannot tell that its own tail is gone; the traces that recorded it can.
            return {
                "verified": False,
                "reason": "ledger_broken",
                "first_seq": first or 1,
                "last_seq": top,
                "entries": 0,
                "head_hash": top_hash,
                "broken_at": top + 1,
                "detail": f"a trace records ledger entry {recorded} but the ledger ends at {top}: entries were deleted",
            }
        if latest is not None and int(latest["tree_size"]) > top and (last is None or last > top):
            return {
                "verified": False,
                "reason": "log_truncated",
                "first_seq": first or 1,
                "last_seq": top,
                "entries": 0,
                "head_hash": top_hash,
                "broken_at": top + 1,
                "detail": f"a signed checkpoint holds {int(latest['tree_size'])} entries but the log ends at {top}: "
                "entries were deleted or the database was rolled back",
            }
        first, last = self._ledger_bounds(first, last, top)
        entries = await self.store.ledger_range(first, last)
        start_prev = GENESIS if first == 1 else None
        if first > 1:
            before = await self.store.ledger_entry_at(first - 1)
            start_prev = before["entry_hash"] if before else None
        verdict = verify_ledger(entries, start_prev=start_prev)
        result: dict[str, Any] = {
            "verified": verdict.ok,
            "reason": verdict.reason,
            "first_seq": first,
            "last_seq": last,
            "entries": len(entries),
            "head_hash": verdict.head_hash,
            **_verdict_fields(verdict),
        }
        if not verdict.ok:
            return result
        # Traces the retention job pruned while intact: their ledger entries stand for them.
        pruned = await self.pruned.intact(first, last) if self.pruned is not None else set()
        result["pruned"] = len(pruned)
        problem, result["traces_checked"] = await self._traces_listed(entries, pruned)
        if problem is not None:
            result.update(verified=False, **problem)
            return result
        log_problem, checked = await self._log_checked(entries, first, top, latest, witnessed)
        result["checkpoints_checked"] = checked
        if log_problem is not None:
            result.update(
                verified=False, reason=log_problem.reason, broken_at=log_problem.broken_at, detail=log_problem.detail
            )
        return result

    async def _traces_listed(
        self, entries: list[dict[str, Any]], pruned: set[str]
    ) -> tuple[dict[str, Any] | None, int]:
        """Every trace the entries list, verified as GET /v1/trust/verify does (chain, recorded
        columns, principal, ledger entry), read a few hundred traces at a time, up to the first
        that fails; returns that failure (or None) and how many were checked. A trace in
        ``pruned`` (pruned while intact) is stood for by its ledger entry."""
        checked = 0
        for start in range(0, len(entries), TRACES_PER_READ):
            chunk = entries[start : start + TRACES_PER_READ]
            ids = [entry["trace_id"] for entry in chunk]
            traces = await self.store.traces_by_id(ids)
            steps = await self.store.steps_by_trace(ids)
            for entry in chunk:
                trace_id = entry["trace_id"]
                trace = traces.get(trace_id)
                if trace is None and trace_id in pruned:
                    continue
                checked += 1
                if trace is None:
                    return {
                        "reason": "trace_deleted",
                        "broken_at": entry["seq"],
                        "detail": f"trace {trace_id} is listed in the ledger but gone",
                    }, checked
                verdict = self._verdict(trace_id, trace, steps.get(trace_id, []), entry)
                if not verdict.ok:
                    return {
                        "reason": verdict.reason,
                        "broken_at": entry["seq"],
                        "detail": f"trace {trace_id}: {verdict.detail}",
                    }, checked
            await asyncio.sleep(0)  # let requests run between reads
        return None, checked

    async def _verifiers(self) -> list[Verifier]:
        """The keys whose checkpoints count: the service's own, then the keys recorded as having
        signed here before (a rotation). The recorded list is read from the database, so a
        verifier that must not trust it pins its key (scripts/verify_receipts.py --key)."""
        if self.checkpointer is None:
            return []
        verifiers = [self.checkpointer.signer.verifier]
        for row in await self.store.keys():
            try:
                key = parse_verifier_key(row["verifier_key"])
            except NoteError:
                continue
            if key != verifiers[0]:
                verifiers.append(key)
        return verifiers

    async def _log_checked(
        self,
        entries: list[dict[str, Any]],
        first: int,
        top: int,
        latest: dict[str, Any] | None,
        witnessed: list[dict[str, Any]],
    ) -> tuple[LogProblem | None, list[dict[str, Any]]]:
        verifiers = await self._verifiers()
        if not verifiers:
            return None, []
        leaves = {int(entry["seq"]) - 1: entry_leaf(entry) for entry in entries}
        return await check_log(
            self.store,
            verifiers,
            latest=latest,
            witnessed=witnessed,
            tree_size=top,
            leaves=leaves,
            low=first - 1,
            high=first - 1 + len(entries),
        )

    async def _hashes(self, ranges: list[Range]) -> list[bytes]:
        """The hashes of the subtrees a proof names (and of the root): one read of their parts."""
        parts: list[Node] = [part for start, size in ranges for part in complete_parts(start, size)]
        try:
            nodes = await self.store.tree_nodes(parts)
        except TreeIncomplete as exc:
            raise _tree_incomplete(exc) from None
        return [range_hash(start, size, nodes.__getitem__) for start, size in ranges]

    async def _tree_size(self, asked: int | None, *, param: str) -> int:
        await self.tracer.flush()
        size = await self.store.tree_size()
        if asked is None:
            return size
        if asked > size:
            raise InvalidRequest(
                f"The receipt log has {size} entries; there is no tree of {asked}.",
                param=param,
                code="invalid_tree_size",
            )
        return asked

    async def tree_head(self) -> dict[str, Any]:
        """The tree's size and root hash now (RFC 9162 hashing over the ledger entries)."""
        size = await self._tree_size(None, param="tree_size")
        try:
            root = await self.store.tree_root(size)
        except TreeIncomplete as exc:
            raise _tree_incomplete(exc) from None
        return {"tree_size": size, "root_hash": b64(root)}

    def _signer(self) -> Checkpointer:
        if self.checkpointer is None:
            raise ServiceUnavailable("Checkpoints are not signed in this process.", code="checkpoints_unavailable")
        return self.checkpointer

    async def latest_checkpoint(self) -> dict[str, Any]:
        """The latest signed checkpoint (one is signed now if the log has none yet)."""
        signer = self._signer()
        await self.tracer.flush()
        latest = await self.store.latest_checkpoint() or await signer.sign()
        if latest is None:
            raise NotFound("The receipt log is empty: no checkpoint yet.", code="no_checkpoint")
        return {**checkpoint_view(latest), "origin": signer.origin}

    async def checkpoints(self, since: int, limit: int) -> dict[str, Any]:
        rows = await self.store.checkpoints(since, min(limit, MAX_CHECKPOINTS) + 1)
        shown = rows[: min(limit, MAX_CHECKPOINTS)]
        return {
            "checkpoints": [checkpoint_view(row) for row in shown],
            "count": len(shown),
            "truncated": len(rows) > len(shown),
        }

    async def public_key(self) -> dict[str, Any]:
        """The verifier key checkpoints are signed with now, and every key that signed here before."""
        signer = self._signer()
        keys = await self.store.keys()
        return {
            "verifier_key": signer.signer.verifier.text,
            "key_name": signer.signer.name,
            "key_id": signer.signer.verifier.key_id.hex(),
            "algorithm": "Ed25519",
            "origin": signer.origin,
            "keys": [
                {"key_id": row["key_id"], "verifier_key": row["verifier_key"], "first_used": row["first_used"]}
                for row in keys
            ],
        }

    async def inclusion_proof(
        self, trace_id: str, tree_size: int | None, *, viewer: str | None = None
    ) -> dict[str, Any]:
        """The trace's ledger entry, its leaf index and the audit path to the root of the tree of
        ``tree_size`` leaves (RFC 9162 2.1.3)."""
        trace_id = check_trace_id(trace_id)
        _, _, entry = await self._load(trace_id, viewer)
        if entry is None:
            raise NotFound(
                f"Trace '{trace_id}' has no ledger entry yet (it has not finished).",
                param="trace_id",
                code="not_in_ledger",
            )
        if tree_size is None:
            latest = await self.store.latest_checkpoint()
            if latest is not None and int(latest["tree_size"]) >= int(entry["seq"]):
                tree_size = int(latest["tree_size"])
        size = await self._tree_size(tree_size, param="tree_size")
        index = int(entry["seq"]) - 1
        if index >= size:
            raise InvalidRequest(
                f"The trace's entry is leaf {index}; a tree of {size} leaves does not hold it yet.",
                param="tree_size",
                code="invalid_tree_size",
            )
        checkpoint = await self.store.checkpoint(size)
        return {
            "trace_id": trace_id,
            **await self._inclusion(entry, size),
            "checkpoint": checkpoint["note"] if checkpoint else None,
        }

    async def _inclusion(self, entry: dict[str, Any], size: int) -> dict[str, Any]:
        index = int(entry["seq"]) - 1
        hashes = await self._hashes([*inclusion_ranges(index, size), (0, size)])
        return {
            "leaf_index": index,
            "tree_size": size,
            "entry": entry_canonical(entry),
            "leaf_hash": b64(entry_leaf(entry)),
            "audit_path": [b64(digest) for digest in hashes[:-1]],
            "root_hash": b64(hashes[-1]),
        }

    async def consistency_proof(self, first: int, second: int | None) -> dict[str, Any]:
        """The proof that the tree of ``first`` leaves is a prefix of the tree of ``second``
        (RFC 9162 2.1.4), with both roots."""
        size = await self._tree_size(second, param="to")
        if first > size:
            raise InvalidRequest(f"`from` ({first}) is after `to` ({size}).", param="from", code="invalid_tree_size")
        ranges = consistency_ranges(first, size) if first < size else []
        hashes = await self._hashes([*ranges, (0, first), (0, size)])
        return {
            "first": first,
            "second": size,
            "first_root": b64(hashes[-2]),
            "second_root": b64(hashes[-1]),
            "proof": [b64(digest) for digest in hashes[:-2]],
        }

    async def audit(self, trace_id: str, *, viewer: str | None = None) -> dict[str, Any]:
        """Was this trace served under the policy files that are on disk now?"""
        trace, steps, entry = await self._load(trace_id, viewer)
        # A hash read from rows that fail verification proves nothing: such a trace is never valid.
        verdict = await self._checked(check_trace_id(trace_id), trace, steps, entry)
        # The hash in force is on the request step and on every policy_snapshot step (tool runs).
        policy_steps = [
            body
            for body in (orjson.loads(row["step_json"]) for row in steps)
            if isinstance(body.get("payload"), dict) and "policy_hash" in body["payload"]
        ]
        recorded = policy_steps[-1]["payload"]["policy_hash"] if policy_steps else None
        current = self.policies.current_hash()
        return {
            "trace_id": check_trace_id(trace_id),
            "valid": verdict.ok and recorded is not None and recorded == current,
            "receipt": {"verified": verdict.ok, "reason": verdict.reason, **_verdict_fields(verdict)},
            "policy_hash_current": current,
            "policy_hash_trace": recorded,
            "policy_hash_loaded": self.policies.loaded_hash,
            "policy": self.policies.describe(),
            "policy_steps": [
                {"step_type": body["step_type"], "payload": body["payload"], "created_at": body["created_at"]}
                for body in policy_steps
            ],
        }
