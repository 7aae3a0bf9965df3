"""``POST /echo``: a debugging aid that proves auth and the request path work."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app.api.body import read_json_object, validate
from app.api.openapi import body_ref
from app.deps import CallerDep

router = APIRouter(tags=["debug"])

MAX_ECHO_CHARS = 10_000  # an echo is for debugging, not a data channel


class EchoRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"message": "hello"}]})

    message: str = Field(default="", max_length=MAX_ECHO_CHARS)


class EchoResponse(BaseModel):
    echo: str


# An empty body is answered (an empty echo), so the body is optional.
@router.post(
    "/echo", response_model=EchoResponse, openapi_extra={"requestBody": {**body_ref(EchoRequest), "required": False}}
)
async def echo(request: Request, _: CallerDep) -> EchoResponse:
    """Returns ``{"echo": message}``. An empty body echoes an empty string."""
    body = await request.body()
    if not body.strip():
        return EchoResponse(echo="")
    payload = validate(EchoRequest, await read_json_object(request))
    return EchoResponse(echo=payload.message)
