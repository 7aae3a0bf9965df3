"""The trust panel (``/v1/trust/*``) and audit verification (``/v1/audit/verify``).

Trust routes need the bearer and ``ORCH_TRUST_PANEL_ENABLED=1`` (503 otherwise, checked after
auth so that the setting is not visible to strangers). Receipts are scoped by principal: the owner
(``ORCH_BEARER_TOKEN``) reads every receipt and the ledger; another principal reads only its own
receipts, and another's trace answers it the same 404 as an unknown one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.body import read_json_object, validate
from app.api.openapi import CONFLICT, NOT_FOUND, json_body_doc
from app.auth import OWNER_ID, Principal
from app.deps import ApiCallerDep, StateDep
from app.errors import PermissionDenied, ServiceUnavailable
from app.receipts.trust import TrustService

router = APIRouter(prefix="/v1", tags=["receipts"])

_MAX_HASH = 64


async def trust_service(state: StateDep, _: ApiCallerDep) -> TrustService:
    if not state.settings.trust_panel_enabled:
        raise ServiceUnavailable(
            "The trust panel is disabled (ORCH_TRUST_PANEL_ENABLED=0).", code="trust_panel_disabled"
        )
    if state.trust is None:
        raise ServiceUnavailable(
            "Receipts are off (ORCH_TRACE_ENABLED=0): there is nothing to show.", code="tracing_disabled"
        )
    return state.trust


async def audit_service(state: StateDep, _: ApiCallerDep) -> TrustService:
    if state.trust is None:
        raise ServiceUnavailable("Receipts are off (ORCH_TRACE_ENABLED=0).", code="tracing_disabled")
    return state.trust


def viewer(caller: Principal) -> str | None:
    """Whose receipts ``caller`` may read: None (everyone's) for the owner, and with auth off
    (no identities at all); otherwise its own principal name."""
    return None if caller.id == OWNER_ID or not caller.authenticated else caller.id


def owner_only(caller: Principal) -> None:
    if viewer(caller) is not None:
        raise PermissionDenied(
            "The ledger lists every caller's receipts: only the owner (the ORCH_BEARER_TOKEN bearer) may "
            "read or verify it. Verify your own receipts with /v1/trust/verify/{trace_id}.",
            code="owner_required",
        )


TrustDep = Annotated[TrustService, Depends(trust_service)]
AuditDep = Annotated[TrustService, Depends(audit_service)]
Debug = Annotated[bool, Query(description="Add payload sizes (only with ORCH_TRUST_PANEL_DEBUG=1).")]


@router.get("/trust/events", summary="Recent receipt steps, newest first")
async def events(
    trust: TrustDep,
    caller: ApiCallerDep,
    *,
    limit: Annotated[int, Query(ge=1, description="At most ORCH_TRUST_PANEL_MAX_EVENTS.")] = 50,
    step_type: Annotated[str | None, Query(max_length=1000, description="Comma-separated step types.")] = None,
    trace_id: Annotated[str | None, Query(max_length=64)] = None,
    debug: Debug = False,
) -> dict[str, Any]:
    types = [t.strip() for t in (step_type or "").split(",") if t.strip()]
    return await trust.events(limit=limit, step_types=types, trace_id=trace_id, viewer=viewer(caller), debug=debug)


@router.get("/trust/trace/{trace_id}", summary="A trace's ordered steps with their hashes")
async def trace_report(trust: TrustDep, caller: ApiCallerDep, trace_id: str, debug: Debug = False) -> dict[str, Any]:
    return await trust.report(trace_id, viewer=viewer(caller), debug=debug)


@router.get("/trust/verify/{trace_id}", summary="Recompute a trace's chain (and compare with a saved head)")
async def verify(
    trust: TrustDep,
    caller: ApiCallerDep,
    trace_id: str,
    expected_hash: Annotated[str | None, Query(max_length=_MAX_HASH, pattern="^[0-9a-fA-F]+$")] = None,
) -> dict[str, Any]:
    return await trust.verify(trace_id, expected_hash, viewer=viewer(caller))


@router.get(
    "/trust/trace/{trace_id}/export",
    summary="The trace as a receipt bundle for offline checks (steps, ledger entry, inclusion proof, checkpoint)",
)
async def export(
    trust: TrustDep,
    caller: ApiCallerDep,
    trace_id: str,
    consistency_from: Annotated[
        int | None,
        Query(ge=1, le=2**63 - 1, description="Also prove that the tree of this many entries is a prefix."),
    ] = None,
) -> dict[str, Any]:
    return await trust.export(trace_id, viewer=viewer(caller), consistency_from=consistency_from)


@router.get(
    "/trust/trace/{trace_id}/attestation",
    summary="The trace as an in-toto Statement in a DSSE envelope, signed with the log's key",
    responses={404: NOT_FOUND, 409: CONFLICT},
)
async def attestation(trust: TrustDep, caller: ApiCallerDep, trace_id: str) -> dict[str, Any]:
    return await trust.attestation(trace_id, viewer=viewer(caller))


_MAX_SEQ = 2**63 - 1  # ledger sequence numbers are 64-bit integers in both databases
LedgerFrom = Annotated[int | None, Query(alias="from", ge=1, le=_MAX_SEQ)]
LedgerTo = Annotated[int | None, Query(alias="to", ge=1, le=_MAX_SEQ)]


@router.get("/trust/ledger", summary="A range of the global ledger as a bundle", responses={404: NOT_FOUND})
async def ledger(
    trust: TrustDep, caller: ApiCallerDep, first: LedgerFrom = None, last: LedgerTo = None
) -> dict[str, Any]:
    owner_only(caller)
    return await trust.export_ledger(first, last)


@router.get(
    "/trust/ledger/verify",
    summary="Verify the ledger and that every trace it lists is intact",
    responses={404: NOT_FOUND},
)
async def ledger_verify(
    trust: TrustDep, caller: ApiCallerDep, first: LedgerFrom = None, last: LedgerTo = None
) -> dict[str, Any]:
    owner_only(caller)
    return await trust.verify_ledger(first, last)


TreeSize = Annotated[
    int | None, Query(ge=1, le=_MAX_SEQ, description="A tree size (default: the latest checkpoint's, else now).")
]


@router.get("/trust/tree", summary="The receipt log's Merkle tree now: size and root hash (RFC 9162)")
async def tree_head(trust: TrustDep, _: ApiCallerDep) -> dict[str, Any]:
    return await trust.tree_head()


@router.get(
    "/trust/checkpoint",
    summary="The latest signed checkpoint of the receipt log (C2SP tlog-checkpoint, Ed25519 signed note)",
    responses={404: NOT_FOUND, 200: {"content": {"text/plain": {}}}},
)
async def checkpoint(
    trust: TrustDep,
    _: ApiCallerDep,
    format: Annotated[
        Literal["json", "note"], Query(description="note: the signed note alone, as text/plain")
    ] = "json",
) -> Any:
    latest = await trust.latest_checkpoint()
    if format == "note":
        return PlainTextResponse(latest["note"], headers={"Cache-Control": "no-store"})
    return latest


@router.get("/trust/checkpoints", summary="Signed checkpoints of trees larger than `since`, oldest first")
async def checkpoints(
    trust: TrustDep,
    _: ApiCallerDep,
    since: Annotated[int, Query(ge=0, le=_MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, description="At most 1000.")] = 100,
) -> dict[str, Any]:
    return await trust.checkpoints(since, limit)


@router.get("/trust/public-key", summary="The key checkpoints are signed with, as a signed-note verifier key")
async def public_key(trust: TrustDep, _: ApiCallerDep) -> dict[str, Any]:
    return await trust.public_key()


@router.get(
    "/trust/proof/inclusion",
    summary="A trace's leaf in the receipt log and its audit path (RFC 9162 2.1.3)",
    responses={404: NOT_FOUND, 409: CONFLICT},
)
async def inclusion_proof(
    trust: TrustDep,
    caller: ApiCallerDep,
    trace_id: Annotated[str, Query(max_length=64)],
    tree_size: TreeSize = None,
) -> dict[str, Any]:
    return await trust.inclusion_proof(trace_id, tree_size, viewer=viewer(caller))


@router.get(
    "/trust/proof/consistency",
    summary="The proof that an older tree is a prefix of a newer one (RFC 9162 2.1.4)",
    responses={409: CONFLICT},
)
async def consistency_proof(
    trust: TrustDep,
    _: ApiCallerDep,
    first: Annotated[int, Query(alias="from", ge=1, le=_MAX_SEQ)],
    second: Annotated[int | None, Query(alias="to", ge=1, le=_MAX_SEQ)] = None,
) -> dict[str, Any]:
    return await trust.consistency_proof(first, second)


class AuditRequest(BaseModel):
    # The example is the shape of a receipt id (the `request_id` of a chat); this one is unknown: 404.
    model_config = ConfigDict(json_schema_extra={"examples": [{"trace_id": "0190f2c4-5b6e-7c3d-8e9f-a1b2c3d4e5f6"}]})

    trace_id: str = Field(min_length=1, max_length=64)


@router.post(
    "/audit/verify",
    summary="Was a trace served under the policy now on disk?",
    openapi_extra=json_body_doc(AuditRequest),
    responses={404: NOT_FOUND},
)
async def audit_verify(request: Request, trust: AuditDep, caller: ApiCallerDep) -> dict[str, Any]:
    body = validate(AuditRequest, await read_json_object(request))
    return await trust.audit(body.trace_id, viewer=viewer(caller))
