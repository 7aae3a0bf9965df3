"""Request models of the review resource (``/v1/review``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
