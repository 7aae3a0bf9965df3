"""``/v1/agents``: the agents (``policies/agents/*.yaml``) and chatting with one.

``POST /v1/agents/{name}/chat`` answers like ``/v1/chat/completions`` (whole or streamed) with the
agent's system prompt, tools and model applied, plus ``"agent": "<name>"``. The same route is
also served at ``/v1/agents/{name}/chat/completions``, so an OpenAI SDK pointed at
``base_url=.../v1/agents/holly`` talks to Holly unchanged. (The original answered 502 to every
agent chat: its resolver was called with the wrong arguments.)
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from app.api.body import disconnect_signal, read_json_object, validate
from app.api.openapi import json_body_doc
from app.deps import AgentsDep, ApiCallerDep, OrchestratorDep, request_id, routing_context
from app.errors import InvalidRequest
from app.orchestrator.sse import STREAM_HEADERS
from app.orchestrator.turn import CallContext
from app.schemas.agents import AgentDetail, AgentList
from app.schemas.chat import ChatCompletion, ChatCompletionRequest

router = APIRouter(prefix="/v1", tags=["agents"])

AI_HEADERS = {"X-AI-Generated": "true"}
AgentName = Annotated[str, Path(min_length=1, max_length=64, description="The agent's name (any case).")]


@router.get("/agents", response_model=AgentList, summary="The agents, in file-name order")
async def list_agents(agents: AgentsDep, _: ApiCallerDep) -> AgentList:
    return agents.list()


@router.get("/agents/{name}", response_model=AgentDetail, summary="One agent, with its system prompt")
async def get_agent(name: AgentName, agents: AgentsDep, _: ApiCallerDep) -> AgentDetail:
    return agents.detail(name)


@router.post(
    "/agents/{name}/chat",
    summary="Chat with an agent (an OpenAI chat completion, whole or streamed)",
    description="The agent's system prompt, tools and model apply; the completion carries `agent`. "
    "Also served at `/v1/agents/{name}/chat/completions` for OpenAI SDKs (`base_url=.../v1/agents/<name>`).",
    openapi_extra=json_body_doc(ChatCompletionRequest),
    response_model=None,
    responses={
        200: {
            "description": "A `chat.completion` with `agent`, or an SSE stream.",
            "content": {"application/json": {}, "text/event-stream": {"schema": {"type": "string"}}},
        },
        502: {"description": "The model provider failed."},
        504: {"description": "The model provider timed out."},
    },
)
@router.post("/agents/{name}/chat/completions", include_in_schema=False, response_model=None)
async def agent_chat(
    name: AgentName, request: Request, agents: AgentsDep, orchestrator: OrchestratorDep, principal: ApiCallerDep
) -> Response:
    agent = agents.agent(name)
    data = await read_json_object(request)
    if not data.get("messages"):
        raise InvalidRequest("Messages required: send at least one message.", param="messages", code="invalid_value")
    chat = validate(ChatCompletionRequest, data)
    conversation = request.headers.get("x-conversation-id")
    ctx = CallContext(
        principal=principal,
        request_id=request_id(request),
        route="/v1/agents/{name}/chat",
        conversation_id=conversation[:128] if conversation else None,
        agent=agent.name,
        caller_gone=disconnect_signal(request),
    )
    routing_context(request, chat, ctx)
    if chat.stream:
        stream = await orchestrator.open_stream(chat, data, ctx)
        return StreamingResponse(stream, media_type="text/event-stream", headers={**STREAM_HEADERS, **AI_HEADERS})
    body = await orchestrator.complete(chat, data, ctx)
    return Response(orjson.dumps(body), media_type="application/json", headers=AI_HEADERS)


MODELS: list[type[BaseModel]] = [ChatCompletion]
