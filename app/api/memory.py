"""The caller's memories: list, read, delete one, forget everything, store one explicitly.

Every route is scoped to the authenticated principal (plus ``X-Conversation-ID`` for new
entries); another caller's entry is indistinguishable from a missing one (404). With
``ORCH_MEMORY_ENABLED=0`` every route answers 503 naming the flag (checked after auth, so that
strangers cannot tell). The rules are in the memory service
(:class:`app.memory.service.MemoryService`); these routes parse, guard and call it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from app.api.body import read_json_object, validate
from app.api.openapi import json_body_doc
from app.deps import ApiCallerDep, MemoryDep, request_id
from app.schemas.memory import (
    MAX_PAGE,
    MEMORY_ID,
    MemoryCreateRequest,
    MemoryDeleted,
    MemoryDeletedAll,
    MemoryPage,
)

router = APIRouter(prefix="/v1/memory", tags=["memory"])

_MAX_CONVERSATION_ID = 128

MemoryId = Annotated[str, Path(pattern=MEMORY_ID, description="A memory id (a UUID).")]


@router.get("", summary="Your memories, oldest first (paginated)")
async def list_memories(
    memory: MemoryDep,
    principal: ApiCallerDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    after: Annotated[str | None, Query(pattern=MEMORY_ID, description="The last id of the previous page.")] = None,
) -> MemoryPage:
    return await memory.list_page(principal.id, limit=limit, after=after)


@router.get("/{memory_id}", summary="One of your memories")
async def get_memory(memory: MemoryDep, principal: ApiCallerDep, memory_id: MemoryId) -> dict[str, Any]:
    return await memory.read(principal.id, memory_id)


@router.delete("/{memory_id}", summary="Delete one of your memories (really deleted)")
async def delete_memory(
    request: Request, memory: MemoryDep, principal: ApiCallerDep, memory_id: MemoryId
) -> MemoryDeleted:
    return await memory.forget(principal.id, memory_id, request_id=request_id(request))


@router.delete("", summary="Forget everything you asked to be remembered")
async def delete_all_memories(request: Request, memory: MemoryDep, principal: ApiCallerDep) -> MemoryDeletedAll:
    return await memory.forget_all(principal.id, request_id=request_id(request))


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
async def create_memory(request: Request, memory: MemoryDep, principal: ApiCallerDep) -> JSONResponse:
    body = validate(MemoryCreateRequest, await read_json_object(request))
    conversation = request.headers.get("x-conversation-id")
    conversation = conversation[:_MAX_CONVERSATION_ID] if conversation else None
    payload, created = await memory.remember(
        body.content, principal=principal.id, conversation_id=conversation, request_id=request_id(request)
    )
    return JSONResponse(payload, status_code=201 if created else 200)
