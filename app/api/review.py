"""``/v1/review``: the human-review queue of routing (the original's queue was write-only).

Listing and resolving need the approver credential: the queue holds other callers' (redacted)
messages, and the person who resolves a routing decision should not be the one who asked it
(separation of duties, as for tool approvals). A caller may read its own item by id.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from app.api.body import read_json_object, validate
from app.api.openapi import CONFLICT, json_body_doc
from app.deps import ApiCallerOrApproverDep, ApproverDep, StateDep
from app.errors import ServiceUnavailable
from app.routing.review import ReviewService

router = APIRouter(prefix="/v1", tags=["review"])

MAX_LIST = 500


async def review_service(state: StateDep) -> ReviewService:
    review = state.routing.review
    if review is None:
        raise ServiceUnavailable(
            "The human-review queue is off: it needs ORCH_ORCHESTRATOR_MODE=advanced and ORCH_INTENT_HITL_ENABLED=1.",
            code="review_queue_disabled",
        )
    return review


ReviewDep = Annotated[ReviewService, Depends(review_service)]
ItemId = Annotated[str, Path(min_length=1, max_length=64)]


class ResolveRequest(BaseModel):
    # A misspelt field ("notes") is refused rather than dropped, as on the other request bodies.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"route": "provider", "note": "a general question: the model answers"}]},
    )

    route: str = Field(
        min_length=1,
        max_length=300,
        description="provider, tool:<name>, model:<name>, agent:<name>, or reject.",
    )
    note: str | None = Field(default=None, max_length=1000)


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
