"""The log check's root recomputation: the root at any size, from the verified leaves where they
cover a subtree and from stored nodes elsewhere, equals RFC 9162's (the independent verifier in
test_merkle), and an edited leaf inside the verified range changes it even when the stored nodes
were left as they were; the witness file's tail."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from app.receipts import logcheck
from app.receipts.merkle import Node, leaf_hash, root_of
from tests.unit.test_merkle import Rfc


class Stored:
    """The stored tree: every node computed from the original leaves, and which were asked for."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self.asked: list[Node] = []

    async def tree_nodes(self, nodes: list[Node]) -> dict[Node, bytes]:
        self.asked += nodes
        return {(lvl, idx): root_of(self.leaves[idx << lvl : (idx + 1) << lvl]) for lvl, idx in nodes}


@pytest.mark.parametrize("seed", range(40))
async def test_the_recomputed_root_is_rfc_9162s(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randint(1, 300)
    entries = [f"entry {i}".encode() for i in range(size)]
    leaves = [leaf_hash(e) for e in entries]
    low = rng.randint(0, size - 1)
    high = rng.randint(low + 1, size)
    store = Stored(leaves)
    verified = {i: leaves[i] for i in range(low, high)}
    tree = logcheck._Tree(store, verified, low, high)  # type: ignore[arg-type]
    at = rng.randint(1, size)
    assert await tree.root(at) == Rfc(entries).mth(0, at)
    # No stored node covers a verified leaf: those come from the rows read.
    for level, index in store.asked:
        assert (index + 1) << level <= low or index << level >= high, (level, index, low, high)
    # An edit inside the verified range shows, whatever the stored nodes say.
    if at > low:
        edited = dict(verified)
        edited[low] = leaf_hash(b"forged")
        forged = logcheck._Tree(Stored(leaves), edited, low, high)  # type: ignore[arg-type]
        assert await forged.root(at) != Rfc(entries).mth(0, at)


def test_the_witness_tail_skips_a_cut_first_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "witness.jsonl"
    rows: list[dict[str, Any]] = [{"tree_size": i, "note": f"note {i}\n"} for i in range(1, 40)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "not json\n")
    assert logcheck.witness_tail(path) == rows
    monkeypatch.setattr(logcheck, "WITNESS_TAIL_BYTES", 200)
    tail = logcheck.witness_tail(path)
    assert tail and tail == rows[-len(tail) :] and len(tail) < len(rows)
    assert logcheck.witness_tail(tmp_path / "missing") == [] and logcheck.witness_tail(None) == []
