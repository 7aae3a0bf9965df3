"""``POST /v1/chat/completions``: the OpenAI-compatible chat route, whole or streamed (SSE)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from app.api.body import json_body_doc, read_model
from app.deps import ApiCallerDep, OrchestratorDep, request_id
from app.orchestrator.service import CallContext
from app.orchestrator.sse import STREAM_HEADERS
from app.schemas.chat import ChatCompletion, ChatCompletionRequest

router = APIRouter(prefix="/v1", tags=["chat"])

ROUTE = "/v1/chat/completions"
# EU AI Act art. 50-style transparency: responses that carry model output say so.
AI_HEADERS = {"X-AI-Generated": "true"}
_MAX_CONVERSATION_ID = 128


@router.post(
    "/chat/completions",
    response_model=None,
    openapi_extra=json_body_doc(ChatCompletionRequest),
    responses={
        200: {
            "model": ChatCompletion,
            "description": "A `chat.completion`, or with `stream: true` an SSE stream of "
            "`chat.completion.chunk` events ending with `data: [DONE]`.",
            "content": {"text/event-stream": {}},
        }
    },
)
async def create_chat_completion(request: Request, principal: ApiCallerDep, orchestrator: OrchestratorDep) -> Response:
    chat, raw = await read_model(request, ChatCompletionRequest)
    conversation = request.headers.get("x-conversation-id")
    ctx = CallContext(
        principal=principal,
        request_id=request_id(request),
        route=ROUTE,
        conversation_id=conversation[:_MAX_CONVERSATION_ID] if conversation else None,
    )
    if chat.stream:
        stream = await orchestrator.open_stream(chat, raw, ctx)
        return StreamingResponse(stream, media_type="text/event-stream", headers={**STREAM_HEADERS, **AI_HEADERS})
    body = await orchestrator.complete(chat, raw, ctx)
    return Response(orjson.dumps(body), media_type="application/json", headers=AI_HEADERS)
