"""The receipt log held to its signed checkpoints: the latest one the database stores, and the
witness file's (kept outside the database, so a rolled-back or rewritten database cannot take it
with it).

A chain of hashes cannot see its own newest entries deleted, nor a history rewritten with every
hash recomputed: a root signed before the edit can. A checkpoint is trusted only if the service's
key (or a key that signed here before, as recorded) signed it; the root at its size is recomputed
from the ledger rows the caller read and verified (stored tree nodes only for the rest), so that
rows edited under intact stored nodes are caught too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.receipts.merkle import Node, complete_parts, node_hash, range_hash, root_of
from app.receipts.notes import Checkpoint, NoteError, Verifier, open_note, parse_checkpoint
from app.receipts.store import TraceStore, TreeIncomplete

WITNESS_TAIL_BYTES = 1 << 17  # the end of the witness file that is read: its last few hundred checkpoints


@dataclass(frozen=True, slots=True)
class LogProblem:
    reason: str
    detail: str
    broken_at: int | None = None


def open_checkpoint(note: str, verifiers: Sequence[Verifier], origin: str | None = None) -> Checkpoint:
    """The checkpoint in ``note`` if one of ``verifiers`` signed it (and, given ``origin``, it is
    this log's); raises :class:`NoteError` otherwise."""
    errors = []
    for verifier in verifiers:
        try:
            text = open_note(note, verifier)
        except NoteError as exc:
            errors.append(str(exc))
            continue
        checkpoint = parse_checkpoint(text)
        if origin is not None and checkpoint.origin != origin:
            raise NoteError(f"the checkpoint is of another log ({checkpoint.origin[:80]!r})")
        return checkpoint
    raise NoteError(errors[-1] if errors else "no key to check the checkpoint with")


def witness_tail(path: Path | None) -> list[dict[str, Any]]:
    """The checkpoints at the end of the witness file (one JSON object per line), oldest first."""
    if path is None:
        return []
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - WITNESS_TAIL_BYTES))
            data = handle.read(WITNESS_TAIL_BYTES)
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if len(data) == WITNESS_TAIL_BYTES and size > WITNESS_TAIL_BYTES:
        lines = lines[1:]  # the first line was cut
    rows = []
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("note"), str):
            rows.append(row)
    return rows


class _Tree:
    """Subtree hashes at chosen sizes: from the leaves the caller verified where they cover a
    subtree, from the stored tree elsewhere."""

    def __init__(self, store: TraceStore, leaves: Mapping[int, bytes], low: int, high: int) -> None:
        self.store, self.leaves, self.low, self.high = store, leaves, low, high
        self.known: dict[Node, bytes] = {}

    def _inside(self, level: int, index: int) -> bool | None:
        first, end = index << level, (index + 1) << level
        if self.low <= first and end <= self.high:
            return True
        if end <= self.low or first >= self.high:
            return False
        return None  # straddles the edge of the verified leaves

    def _stored_needed(self, level: int, index: int, out: set[Node]) -> None:
        inside = self._inside(level, index)
        if inside is False:
            out.add((level, index))
        elif inside is None:
            self._stored_needed(level - 1, 2 * index, out)
            self._stored_needed(level - 1, 2 * index + 1, out)

    def _hash(self, level: int, index: int) -> bytes:
        node = (level, index)
        if node in self.known:
            return self.known[node]
        inside = self._inside(level, index)
        if inside:
            first = index << level
            value = root_of([self.leaves[position] for position in range(first, first + (1 << level))])
        else:  # straddling (a node wholly outside was read from the store)
            value = node_hash(self._hash(level - 1, 2 * index), self._hash(level - 1, 2 * index + 1))
        self.known[node] = value
        return value

    async def root(self, size: int) -> bytes:
        needed: set[Node] = set()
        for level, index in complete_parts(0, size):
            self._stored_needed(level, index, needed)
        missing = sorted(node for node in needed if node not in self.known)
        if missing:
            self.known.update(await self.store.tree_nodes(missing))
        return range_hash(0, size, lambda node: self._hash(*node))


async def check_log(
    store: TraceStore,
    verifiers: Sequence[Verifier],
    *,
    latest: Mapping[str, Any] | None,
    witnessed: Sequence[Mapping[str, Any]],
    tree_size: int,
    leaves: Mapping[int, bytes],
    low: int,
    high: int,
) -> tuple[LogProblem | None, list[dict[str, Any]]]:
    """The log (of ``tree_size`` leaves) against its latest stored checkpoint and the witness
    file's checkpoints, both read before the tree's size (the log only grows: a checkpoint read
    first that is larger than the log means entries went missing); ``leaves`` are the verified
    leaf hashes of positions ``low`` to ``high - 1``. Returns the first problem (or None) and what
    was checked."""
    candidates: list[tuple[str, str]] = []
    if latest is not None:
        candidates.append(("database", latest["note"]))
    candidates += [("witness", row["note"]) for row in witnessed]
    opened: list[tuple[str, Checkpoint]] = []
    checked: list[dict[str, Any]] = []
    for source, note in candidates:
        try:
            opened.append((source, open_checkpoint(note, verifiers)))
        except NoteError as exc:
            return LogProblem("checkpoint_invalid", f"a checkpoint in the {source}: {exc}"), checked
    roots: dict[int, tuple[str, bytes]] = {}
    for source, checkpoint in opened:
        seen = roots.get(checkpoint.size)
        if seen is not None and seen[1] != checkpoint.root:
            return LogProblem(
                "log_forked",
                f"two checkpoints of {checkpoint.size} entries sign different roots ({seen[0]} and {source})",
                checkpoint.size,
            ), checked
        roots[checkpoint.size] = (source, checkpoint.root)
    # Against the root now: the stored checkpoint and the newest witnessed one (older witnessed
    # checkpoints are prefixes of it, which the fork check above and its consistency cover).
    newest_witnessed = max((c for s, c in opened if s == "witness"), key=lambda c: c.size, default=None)
    held = [c for s, c in opened if s == "database"] + ([newest_witnessed] if newest_witnessed else [])
    tree = _Tree(store, leaves, low, high)
    for checkpoint in held:
        source = "witnessed" if checkpoint is newest_witnessed else "stored"
        if checkpoint.size > tree_size:
            return LogProblem(
                "log_truncated",
                f"a {source} checkpoint signs {checkpoint.size} entries but the log holds {tree_size}: entries were "
                "deleted or the database was rolled back",
                tree_size + 1,
            ), checked
        try:
            root = await tree.root(checkpoint.size)
        except TreeIncomplete as exc:
            detail = f"the root at a {source} checkpoint cannot be recomputed: {exc}"
            return LogProblem("tree_incomplete", detail), checked
        if root != checkpoint.root:
            return LogProblem(
                "checkpoint_mismatch",
                f"the log's root at {checkpoint.size} entries is not the one a {source} checkpoint signed: its history "
                "was rewritten",
                checkpoint.size,
            ), checked
        checked.append({"source": source, "tree_size": checkpoint.size})
    return None, checked
