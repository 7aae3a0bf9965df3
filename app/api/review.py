"""``/v1/review``: the human-review queue of routing (the original's queue was write-only).

Listing and resolving need the approver credential: the queue holds other callers' (redacted)
messages, and the person who resolves a routing decision should not be the one who asked it
(separation of duties, as for tool approvals). A caller may read its own item by id.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request

from app.api.body import read_json_object, validate
from app.api.openapi import CONFLICT, json_body_doc
from app.deps import ApiCallerOrApproverDep, ApproverDep, ReviewDep
from app.schemas.review import ResolveRequest

router = APIRouter(prefix="/v1", tags=["review"])

MAX_LIST = 500


ItemId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/review", summary="The review queue (approver)")
async def list_reviews(
    _: ApproverDep,
    review: ReviewDep,
    status: Annotated[
        Literal["pending", "resolved", "rejected", "all"], Query(description="Which items (default pending).")
    ] = "pending",
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
) -> dict[str, Any]:
    items = await review.list(status=None if status == "all" else status, limit=limit)
    return {"object": "list", "count": len(items), "items": [item.as_dict() for item in items]}


@router.get("/review/{item_id}", summary="One review item (its requester, or an approver)")
async def get_review(item_id: ItemId, principal: ApiCallerOrApproverDep, review: ReviewDep) -> dict[str, Any]:
    return (await review.get(item_id, principal)).as_dict()


@router.post(
    "/review/{item_id}/resolve",
    summary="Resolve a review item with the route it should take (approver)",
    openapi_extra=json_body_doc(ResolveRequest),
    responses={409: CONFLICT},
)
async def resolve_review(item_id: ItemId, request: Request, approver: ApproverDep, review: ReviewDep) -> dict[str, Any]:
    body = validate(ResolveRequest, await read_json_object(request))
    return await review.resolve(item_id, route=body.route.strip(), note=body.note, approver=approver)
