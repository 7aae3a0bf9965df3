"""The Merkle tree over the receipt ledger, hashed as RFC 9162 (Certificate Transparency v2)
section 2.1 defines it, so that anyone with a CT verifier can check our proofs.

Standard library only: ``scripts/verify_receipts.py`` uses the verification half.

* leaf hash: ``SHA-256(0x00 || entry)``, where the entry is a ledger entry's canonical text;
* node hash: ``SHA-256(0x01 || left || right)``;
* the tree of ``n`` leaves splits at ``k``, the largest power of two below ``n``.

Proofs are lists of subtree hashes. Which subtrees a proof needs is pure arithmetic
(:func:`inclusion_ranges`, :func:`consistency_ranges`); the hash of each subtree comes from the
complete, aligned subtrees it is made of (:func:`complete_parts`), which the store keeps (or
computes from leaves for the lowest levels). So a proof costs O(log n) hashes and lookups.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Range = tuple[int, int]
"""A subtree as (first leaf, number of leaves)."""
Node = tuple[int, int]
"""A complete, aligned subtree as (level, index): leaves ``index * 2**level`` to ``(index + 1) * 2**level - 1``."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n`` >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The root of a tree given all its leaf hashes (for small trees and tests)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    # Fold pairwise; an odd node at the end is carried up unchanged, which gives the same tree
    # as RFC 9162's recursive split at the largest power of two.
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtrees whose hashes form the audit path of leaf ``index`` in a tree of ``size`` leaves,
    in proof order (RFC 9162 2.1.3.1, PATH)."""
    if not 0 <= index < size:
        raise ValueError("the leaf is not in the tree")
    path: list[Range] = []
    start, n, m = 0, size, index
    while n > 1:
        k = split_point(n)
        if m < k:
            path.append((start + k, n - k))
            n = k
        else:
            path.append((start, k))
            start, n, m = start + k, n - k, m - k
    path.reverse()
    return path


def consistency_ranges(old: int, new: int) -> list[Range]:
    """The subtrees whose hashes form the consistency proof from a tree of ``old`` leaves to one of
    ``new`` leaves, in proof order (RFC 9162 2.1.4.1, PROOF / SUBPROOF)."""
    if not 0 < old <= new:
        raise ValueError("a consistency proof needs 0 < old <= new")
    proof: list[Range] = []
    start, n, m, complete = 0, new, old, True
    while m != n:
        k = split_point(n)
        if m <= k:
            proof.append((start + k, n - k))
            n = k
        else:
            proof.append((start, k))
            start, n, m, complete = start + k, n - k, m - k, False
    if not complete:
        proof.append((start, n))
    proof.reverse()
    return proof


def complete_parts(start: int, size: int) -> list[Node]:
    """The complete, aligned subtrees a proof's subtree is made of, left to right.

    Every subtree a proof names starts at a multiple of its largest part, so it is its size's
    binary decomposition laid out from ``start``."""
    parts: list[Node] = []
    position = start
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            width = 1 << level
            if position % width:
                raise ValueError("the range is not made of aligned subtrees")
            parts.append((level, position >> level))
            position += width
    return parts


def range_hash(start: int, size: int, node: Callable[[Node], bytes]) -> bytes:
    """A subtree's hash from its complete parts: the right-most parts fold first, as the tree's
    recursive split at the largest power of two does."""
    parts = [node(part) for part in complete_parts(start, size)]
    result = parts[-1]
    for part in reversed(parts[:-1]):
        result = node_hash(part, result)
    return result


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does ``path`` prove leaf hash ``leaf`` at ``index`` in the tree of
    ``size`` leaves with ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: does ``proof`` show that the tree of ``old`` leaves with ``old_root`` is a
    prefix of the tree of ``new`` leaves with ``new_root``?"""
    if old == new:
        return not proof and old_root == new_root
    if not 0 < old < new:
        return False
    path = list(proof)
    if old & (old - 1) == 0:  # old is a power of two: its root is the first node of the path
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
