"""The receipt log's Merkle proofs, checked by an independent implementation of RFC 9162 written
here from the RFC's own definitions (section 2.1), not from the service's code: every tree size
up to 64 with every leaf and every older size, and random sizes up to 100,000."""

from __future__ import annotations

import hashlib
import random
from functools import cache

import pytest

from app.receipts import merkle


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Rfc:
    """RFC 9162 2.1.1-2.1.4, literally: MTH, PATH, PROOF/SUBPROOF and the two verifiers."""

    def __init__(self, entries: list[bytes]) -> None:
        self.d = entries

    @cache  # noqa: B019 - one instance per test, dropped with it
    def mth(self, start: int, end: int) -> bytes:
        n = end - start
        if n == 0:
            return sha(b"")
        if n == 1:
            return sha(b"\x00" + self.d[start])
        k = 1
        while k * 2 < n:
            k *= 2
        return sha(b"\x01" + self.mth(start, start + k) + self.mth(start + k, end))

    def path(self, m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = 1
        while k * 2 < n:
            k *= 2
        if m < k:
            return [*self.path(m, start, start + k), self.mth(start + k, end)]
        return [*self.path(m - k, start + k, end), self.mth(start, start + k)]

    def subproof(self, m: int, start: int, end: int, b: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if b else [self.mth(start, end)]
        k = 1
        while k * 2 < n:
            k *= 2
        if m <= k:
            return [*self.subproof(m, start, start + k, b), self.mth(start + k, end)]
        return [*self.subproof(m - k, start + k, end, False), self.mth(start, start + k)]


def rfc_verify_inclusion(leaf_index: int, tree_size: int, leaf: bytes, path: list[bytes], root: bytes) -> bool:
    if leaf_index >= tree_size:
        return False
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = sha(b"\x01" + p + r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        else:
            r = sha(b"\x01" + r + p)
        fn //= 2
        sn //= 2
    return sn == 0 and r == root


def rfc_verify_consistency(first: int, second: int, first_hash: bytes, second_hash: bytes, proof: list[bytes]) -> bool:
    if first == second:
        return not proof and first_hash == second_hash
    path = list(proof)
    if (first & (first - 1)) == 0:
        path = [first_hash, *path]
    if not path:
        return False
    fn, sn = first - 1, second - 1
    while fn % 2 == 1:
        fn //= 2
        sn //= 2
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = sha(b"\x01" + c + fr)
            sr = sha(b"\x01" + c + sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        else:
            sr = sha(b"\x01" + sr + c)
        fn //= 2
        sn //= 2
    return fr == first_hash and sr == second_hash and sn == 0


def entries(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


class Ours:
    """The service's proofs, from its ranges and complete parts over the leaf hashes."""

    def __init__(self, data: list[bytes]) -> None:
        self.leaves = [merkle.leaf_hash(entry) for entry in data]

    @cache  # noqa: B019
    def node(self, part: merkle.Node) -> bytes:
        level, index = part
        return merkle.root_of(self.leaves[index << level : (index + 1) << level])

    def hashes(self, ranges: list[merkle.Range]) -> list[bytes]:
        return [merkle.range_hash(start, size, self.node) for start, size in ranges]

    def root(self, size: int) -> bytes:
        return self.hashes([(0, size)])[0]


def test_roots_match_the_rfc_for_every_size_up_to_64() -> None:
    data = entries(64)
    rfc, ours = Rfc(data), Ours(data)
    assert merkle.root_of([]) == rfc.mth(0, 0) == merkle.EMPTY_ROOT
    for n in range(1, 65):
        assert ours.root(n) == rfc.mth(0, n) == merkle.root_of(ours.leaves[:n]), n


def test_inclusion_proofs_for_every_leaf_of_every_size_up_to_64() -> None:
    data = entries(64)
    rfc, ours = Rfc(data), Ours(data)
    for n in range(1, 65):
        root = rfc.mth(0, n)
        for m in range(n):
            path = ours.hashes(merkle.inclusion_ranges(m, n))
            assert path == rfc.path(m, 0, n), (m, n)
            assert rfc_verify_inclusion(m, n, ours.leaves[m], path, root)
            assert merkle.verify_inclusion(ours.leaves[m], m, n, path, root)
            # A proof for another leaf, size or root does not verify.
            assert not merkle.verify_inclusion(ours.leaves[(m + 1) % n], m, n, path, root) or n == 1
            assert not merkle.verify_inclusion(ours.leaves[m], m, n, path, sha(b"other"))
            if path:
                assert not merkle.verify_inclusion(ours.leaves[m], m, n, path[:-1], root)


def test_consistency_proofs_for_every_pair_of_sizes_up_to_64() -> None:
    data = entries(64)
    rfc, ours = Rfc(data), Ours(data)
    for n in range(1, 65):
        for m in range(1, n + 1):
            proof = ours.hashes(merkle.consistency_ranges(m, n)) if m < n else []
            assert proof == rfc.subproof(m, 0, n, True), (m, n)
            assert rfc_verify_consistency(m, n, rfc.mth(0, m), rfc.mth(0, n), proof)
            assert merkle.verify_consistency(m, n, rfc.mth(0, m), rfc.mth(0, n), proof)
            if m < n:
                # A forked log: the same old size with another root is caught.
                assert not merkle.verify_consistency(m, n, sha(b"fork"), rfc.mth(0, n), proof)
                assert not merkle.verify_consistency(m, n, rfc.mth(0, m), sha(b"fork"), proof)


@pytest.mark.parametrize("seed", range(4))
def test_random_sizes_up_to_100000(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(65, 100_000)
    data = entries(n)
    rfc, ours = Rfc(data), Ours(data)
    root = rfc.mth(0, n)
    assert ours.root(n) == root
    for m in [0, n - 1, *rng.sample(range(n), 5)]:
        path = ours.hashes(merkle.inclusion_ranges(m, n))
        assert path == rfc.path(m, 0, n)
        assert rfc_verify_inclusion(m, n, ours.leaves[m], path, root)
    for m in [1, n - 1, *rng.sample(range(1, n), 5)]:
        proof = ours.hashes(merkle.consistency_ranges(m, n))
        assert proof == rfc.subproof(m, 0, n, True)
        assert rfc_verify_consistency(m, n, rfc.mth(0, m), root, proof)
    assert len(merkle.inclusion_ranges(n // 2, n)) <= n.bit_length()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_ranges(5, 5)
    with pytest.raises(ValueError):
        merkle.consistency_ranges(0, 5)
    with pytest.raises(ValueError):
        merkle.consistency_ranges(6, 5)
    assert not merkle.verify_inclusion(b"x" * 32, 3, 3, [], b"x" * 32)
    assert not merkle.verify_consistency(0, 5, b"", b"", [])
