"""The caller's memories: list, read, delete one, forget everything, store one explicitly.

Every route is scoped to the authenticated principal (plus ``X-Conversation-ID`` for new
entries); another caller's entry is indistinguishable from a missing one (404). With
``ORCH_MEMORY_ENABLED=0`` every route answers 503 naming the flag (checked after auth, so that
strangers cannot tell).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.body import read_json_object, validate
from app.api.openapi import json_body_doc
from app.deps import ApiCallerDep, StateDep, request_id
from app.errors import InternalError, InvalidRequest, NotFound, PermissionDenied, ServiceUnavailable
from app.memory.gate import (
    DENY_ERROR,
    DENY_FEATURE_DISABLED,
    DENY_POLICY_WRITE_DISABLED,
    DENY_SCRUBBED_TOO_SHORT,
    DENY_SENSITIVE_CONTENT,
)
from app.memory.service import MemoryService

router = APIRouter(prefix="/v1/memory", tags=["memory"])

PATH = "/v1/memory"
MEMORY_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
MAX_PAGE = 100
MAX_POSTED_CHARS = 100_000  # longer bodies are refused (stored memories are cut to ORCH_MEMORY_MAX_CHARS)
_MAX_CONVERSATION_ID = 128


async def memory_service(state: StateDep, _: ApiCallerDep) -> MemoryService:
    if not state.settings.memory_enabled or state.memory.store is None:
        raise ServiceUnavailable("Memory is disabled (ORCH_MEMORY_ENABLED=0).", code="memory_disabled")
    return state.memory


MemoryDep = Annotated[MemoryService, Depends(memory_service)]
MemoryId = Annotated[str, Path(pattern=MEMORY_ID, description="A memory id (a UUID).")]


class MemoryCreateRequest(BaseModel):
    """Store one memory through the gate (same scrubbing and decisions as chat capture)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"content": "Deployments happen on Fridays after the standup"}]}
    )

    content: str = Field(min_length=1, max_length=MAX_POSTED_CHARS, description="What to remember.")


def _not_found(memory_id: str) -> NotFound:
    return NotFound(f"No memory '{memory_id}'.", param="memory_id", code="memory_not_found")


@router.get("", summary="Your memories, oldest first (paginated)")
async def list_memories(
    memory: MemoryDep,
    principal: ApiCallerDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    after: Annotated[str | None, Query(pattern=MEMORY_ID, description="The last id of the previous page.")] = None,
) -> dict[str, Any]:
    entries, more = await memory.page(principal.id, limit=limit, after=after)
    data = [entry.as_dict() for entry in entries]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


@router.get("/{memory_id}", summary="One of your memories")
async def get_memory(memory: MemoryDep, principal: ApiCallerDep, memory_id: MemoryId) -> dict[str, Any]:
    entry = await memory.get(principal.id, memory_id)
    if entry is None:
        raise _not_found(memory_id)
    return entry.as_dict()


def _receipt(state: StateDep, request: Request, principal: str, route: str) -> Any:
    return state.tracer.begin(route=route, request_id=request_id(request), principal=principal, stream=False)


@router.delete("/{memory_id}", summary="Delete one of your memories (really deleted)")
async def delete_memory(
    request: Request, state: StateDep, memory: MemoryDep, principal: ApiCallerDep, memory_id: MemoryId
) -> dict[str, Any]:
    trace = _receipt(state, request, principal.id, PATH + "/{memory_id}")
    try:
        deleted = await memory.delete(principal.id, memory_id, trace)
    finally:
        trace.end()
    if not deleted:
        raise _not_found(memory_id)
    return {"id": memory_id, "object": "memory.deleted", "deleted": True, "request_id": trace.id}


@router.delete("", summary="Forget everything you asked to be remembered")
async def delete_all_memories(
    request: Request, state: StateDep, memory: MemoryDep, principal: ApiCallerDep
) -> dict[str, Any]:
    trace = _receipt(state, request, principal.id, PATH)
    try:
        count = await memory.delete_all(principal.id, trace)
    finally:
        trace.end()
    return {"object": "memory.deleted", "deleted": count, "request_id": trace.id}


@router.post(
    "",
    summary="Store a memory explicitly (through the gate)",
    openapi_extra=json_body_doc(MemoryCreateRequest),
    status_code=201,
    responses={
        200: {"description": "The same content was already stored: refreshed (`allow:dedupe_update`)."},
        400: {"description": "`sensitive_content` or `scrubbed_too_short`: nothing was stored."},
        403: {"description": "ORCH_MEMORY_WRITE_POLICY=off."},
        503: {"description": "ORCH_MEMORY_ENABLED=0 or ORCH_MEMORY_CAPTURE_ENABLED=0."},
    },
)
async def create_memory(request: Request, state: StateDep, memory: MemoryDep, principal: ApiCallerDep) -> JSONResponse:
    body = validate(MemoryCreateRequest, await read_json_object(request))
    conversation = request.headers.get("x-conversation-id")
    conversation = conversation[:_MAX_CONVERSATION_ID] if conversation else None
    trace = _receipt(state, request, principal.id, PATH)
    try:
        outcome = await memory.capture(
            body.content, principal=principal.id, conversation_id=conversation, source="api", trace=trace, explicit=True
        )
    finally:
        trace.end()
    decision = outcome.response()
    extra = {"memory_decision": decision, "request_id": trace.id}
    if outcome.candidate_id is not None:
        entry = await memory.get(principal.id, outcome.candidate_id)
        payload = {"memory_decision": decision, "memory": entry.as_dict() if entry else None, "request_id": trace.id}
        return JSONResponse(payload, status_code=200 if decision["reason"] == "allow:dedupe_update" else 201)
    reason = outcome.reason
    if reason == DENY_SENSITIVE_CONTENT:
        raise InvalidRequest(
            "The content looks like it contains a credential (a key, token or password); nothing was stored.",
            param="content",
            code="sensitive_content",
            extra=extra,
        )
    if reason == DENY_SCRUBBED_TOO_SHORT:
        raise InvalidRequest(
            f"After scrubbing, the content is shorter than {state.settings.memory_min_chars} characters "
            "(ORCH_MEMORY_MIN_CHARS); nothing was stored.",
            param="content",
            code="scrubbed_too_short",
            extra=extra,
        )
    if reason == DENY_POLICY_WRITE_DISABLED:
        raise PermissionDenied(
            "Memory writes are off (ORCH_MEMORY_WRITE_POLICY=off).", code="memory_write_disabled", extra=extra
        )
    if reason == DENY_FEATURE_DISABLED:
        raise ServiceUnavailable(
            "Memory capture is disabled (ORCH_MEMORY_CAPTURE_ENABLED=0).", code="memory_capture_disabled", extra=extra
        )
    if reason == DENY_ERROR:
        raise InternalError("The memory could not be stored.", code="memory_error", extra=extra)
    raise InternalError(f"Unexpected memory decision {reason}.", extra=extra)  # pragma: no cover
