"""Request and response models of the memory resource (``/v1/memory``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MEMORY_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
MAX_PAGE = 100
MAX_POSTED_CHARS = 100_000  # longer bodies are refused (stored memories are cut to ORCH_MEMORY_MAX_CHARS)


class MemoryCreateRequest(BaseModel):
    """Store one memory through the gate (same scrubbing and decisions as chat capture)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"content": "Deployments happen on Fridays after the standup"}]}
    )

    content: str = Field(min_length=1, max_length=MAX_POSTED_CHARS, description="What to remember.")


class MemoryPage(BaseModel):
    """One page of the caller's memories, oldest first; pass ``last_id`` as ``after`` for the next."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


class MemoryDeleted(BaseModel):
    """One memory deleted; ``request_id`` is its receipt."""

    id: str
    object: Literal["memory.deleted"] = "memory.deleted"
    deleted: Literal[True] = True
    request_id: str


class MemoryDeletedAll(BaseModel):
    """Every memory of the caller deleted: how many; ``request_id`` is the receipt."""

    object: Literal["memory.deleted"] = "memory.deleted"
    deleted: int
    request_id: str
