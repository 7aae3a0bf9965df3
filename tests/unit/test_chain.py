"""The ledger entry's canonical text: the writer's fast path gives exactly the JSON encoder's
bytes, for both entry versions, and a verifier reads each version as it was written."""

from __future__ import annotations

import json

import pytest

from app.receipts.chain import GENESIS, canonical, entry_canonical, ledger_canonical, link, verify_ledger

TRACE = "0190f2c4-5b6e-7c3d-8e9f-a1b2c3d4e5f6"
AT = "2026-12-08T01:00:00.123456+00:00"


@pytest.mark.parametrize("principal", [None, "owner", "alice", 'qu"ote\\', "ünï\u2028", "tab\there"])
def test_the_fast_path_is_the_canonical_json(principal: str | None) -> None:
    fields = {"created_at": AT, "head_hash": "ab" * 32, "seq": 7, "step_count": 3, "trace_id": TRACE}
    if principal is not None:
        fields["principal"] = principal
    expected = canonical(fields)
    assert ledger_canonical(7, TRACE, "ab" * 32, 3, AT, principal=principal, plain=True) == expected
    assert ledger_canonical(7, TRACE, "ab" * 32, 3, AT, principal=principal) == expected
    assert json.loads(expected) == fields


def test_each_entry_version_verifies_as_written_and_a_dropped_principal_breaks_it() -> None:
    v1 = {"seq": 1, "trace_id": TRACE, "head_hash": "cd" * 32, "step_count": 2, "created_at": AT, "principal": None}
    v1["prev_hash"], v1["entry_hash"] = GENESIS, link(GENESIS, entry_canonical(v1))
    v2 = {"seq": 2, "trace_id": TRACE, "head_hash": "ef" * 32, "step_count": 2, "created_at": AT, "principal": "bob"}
    v2["prev_hash"], v2["entry_hash"] = v1["entry_hash"], link(v1["entry_hash"], entry_canonical(v2))
    assert "principal" not in entry_canonical(v1) and '"principal":"bob"' in entry_canonical(v2)
    assert verify_ledger([v1, v2], start_prev=GENESIS).ok
    for forged in ({**v2, "principal": None}, {**v2, "principal": "alice"}):
        verdict = verify_ledger([v1, forged], start_prev=GENESIS)
        assert not verdict.ok and verdict.broken_at == 2
