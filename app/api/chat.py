"""``POST /v1/chat/completions``: the OpenAI-compatible chat route, whole or streamed (SSE).

The hottest route is a plain Starlette route, not a FastAPI one: FastAPI's request handler
(dependency solving, its wrappers) measured ~29 us per request here, a quarter of a demo-mode
request. The route still does what a FastAPI route would: one guard call (API switch, auth, rate
limit), the body validated by the pydantic model, one service call, errors raised as
``OrchestratorError`` and turned into the envelope by the app's handlers. It is documented in
``/docs`` through :data:`OPENAPI` (see :mod:`app.api.openapi`).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Match, Route
from starlette.types import Scope

from app.api.body import disconnect_signal, read_model
from app.api.openapi import body_ref, response_ref
from app.deps import api_caller, app_state, request_id, routing_context
from app.orchestrator.sse import STREAM_HEADERS
from app.orchestrator.turn import CallContext
from app.schemas.chat import ChatCompletion, ChatCompletionRequest

PATH = "/v1/chat/completions"
# EU AI Act art. 50-style transparency: responses that carry model output say so.
AI_HEADERS = {"X-AI-Generated": "true"}
_MAX_CONVERSATION_ID = 128


async def create_chat_completion(request: Request) -> Response:
    principal = await api_caller(request)
    orchestrator = app_state(request).orchestrator
    chat, raw = await read_model(request, ChatCompletionRequest)
    conversation = request.headers.get("x-conversation-id")
    ctx = CallContext(
        principal=principal,
        request_id=request_id(request),
        route=PATH,
        conversation_id=conversation[:_MAX_CONVERSATION_ID] if conversation else None,
        caller_gone=disconnect_signal(request),
    )
    routing_context(request, chat, ctx)  # model "agent:<name>", ?debug=1, X-Orch-Meta-* headers
    if chat.stream:
        stream = await orchestrator.open_stream(chat, raw, ctx)
        return StreamingResponse(stream, media_type="text/event-stream", headers={**STREAM_HEADERS, **AI_HEADERS})
    body = await orchestrator.complete(chat, raw, ctx)
    return Response(orjson.dumps(body), media_type="application/json", headers=AI_HEADERS)


class _LabelledRoute(Route):
    """Records itself in the scope like FastAPI's routes do, so metrics and logs get its template."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


route = _LabelledRoute(PATH, create_chat_completion, methods=["POST"], name="create_chat_completion")

OPENAPI: dict[str, Any] = {
    "post": {
        "tags": ["chat"],
        "summary": "Create a chat completion (OpenAI-compatible)",
        "operationId": "create_chat_completion",
        "description": "A `chat.completion`, or with `stream: true` an SSE stream of `chat.completion.chunk` "
        "events ending with `data: [DONE]`. The orchestrator fields (`request_id`, `memory_decision`, "
        "`route_decision`, `model_decision`, `tool_result`) come with the completion (streams: on the first "
        "chunk). Send `X-Conversation-ID` to scope memories to a conversation.",
        "requestBody": body_ref(ChatCompletionRequest),
        "responses": {
            "200": {
                "description": "The completion, or the stream.",
                "content": {
                    "application/json": {"schema": response_ref(ChatCompletion)},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            "400": {"description": "Invalid request (the OpenAI error envelope, `param` names the field)."},
            "401": {"description": "Missing or invalid bearer token."},
            "404": {"description": 'No such agent (`model: "agent:<name>"`).'},
            "429": {"description": "Rate limited (`Retry-After`)."},
            "502": {"description": "The model provider failed."},
            "503": {"description": "API disabled, provider circuit open, or network disabled."},
            "504": {"description": "The model provider timed out."},
        },
    }
}
MODELS: list[type[BaseModel]] = [ChatCompletionRequest, ChatCompletion]
