"""``/v1/agents``: the agents (``policies/agents/*.yaml``) and chatting with one.

``POST /v1/agents/{name}/chat`` answers like ``/v1/chat/completions`` (whole or streamed) with the
agent's system prompt, tools and model applied, plus ``"agent": "<name>"``. The same route is
also served at ``/v1/agents/{name}/chat/completions``, so an OpenAI SDK pointed at
``base_url=.../v1/agents/holly`` talks to Holly unchanged. (The original answered 502 to every
agent chat: its resolver was called with the wrong arguments.)
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.types import Scope

from app.agents.registry import Agent
from app.agents.stage import agent_from_model
from app.api.body import disconnect_signal, read_json_object, validate
from app.api.openapi import json_body_doc
from app.deps import ApiCallerDep, StateDep, request_id
from app.errors import InvalidRequest, NotFound
from app.orchestrator.sse import STREAM_HEADERS
from app.orchestrator.turn import CallContext
from app.schemas.chat import ChatCompletion, ChatCompletionRequest

router = APIRouter(prefix="/v1", tags=["agents"])

AI_HEADERS = {"X-AI-Generated": "true"}
_META_PREFIX = b"x-orch-meta-"
_MAX_META_HEADERS = 32
_MAX_META_VALUE = 256
_DEBUG_VALUES = frozenset({"1", "true", "yes"})

AgentName = Annotated[str, Path(min_length=1, max_length=64, description="The agent's name (any case).")]


def metadata_headers(scope: Scope) -> dict[str, str]:
    """``X-Orch-Meta-<key>: <value>`` headers as ``{key: value}`` (keys lower-cased, bounded)."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name.startswith(_META_PREFIX) and len(found) < _MAX_META_HEADERS:
            key = name[len(_META_PREFIX) :].decode("latin-1")
            if key:
                found[key] = value.decode("latin-1")[:_MAX_META_VALUE]
    return found


def routing_context(request: Request, chat: ChatCompletionRequest, ctx: CallContext) -> None:
    """What the chat routes pass on for agents and routing: ``model: "agent:<name>"``, ``?debug=1``
    and the ``X-Orch-Meta-*`` headers (read only when the routing stage runs)."""
    agent = agent_from_model(chat.model)
    if agent is not None:
        if ctx.agent is not None and agent.lower() != ctx.agent.lower():
            raise InvalidRequest(
                f"This route talks to agent '{ctx.agent}'; the model names agent '{agent[:64]}'.",
                param="model",
                code="agent_mismatch",
            )
        ctx.agent, chat.model = ctx.agent or agent, None
    if request.scope["query_string"]:
        ctx.debug = request.query_params.get("debug", "").lower() in _DEBUG_VALUES
    if request.app.state.orch.routing.active:
        ctx.metadata = metadata_headers(request.scope)


def _agent(state: Any, name: str) -> Agent:
    agent: Agent | None = state.routing.agents.get(name)
    if agent is None:
        raise NotFound(f"There is no agent named '{name}'.", param="name", code="agent_not_found")
    return agent


class AgentSummary(BaseModel):
    name: str
    description: str
    tools: list[str]
    model: str | None
    metadata: dict[str, Any]


class AgentList(BaseModel):
    count: int
    agents: list[AgentSummary]


class AgentDetail(AgentSummary):
    system_prompt: str
    replace_system_prompt: bool


@router.get("/agents", response_model=AgentList, summary="The agents, in file-name order")
async def list_agents(state: StateDep, _: ApiCallerDep) -> dict[str, Any]:
    agents = state.routing.agents.all()
    return {"count": len(agents), "agents": [agent.summary() for agent in agents]}


@router.get("/agents/{name}", response_model=AgentDetail, summary="One agent, with its system prompt")
async def get_agent(name: AgentName, state: StateDep, _: ApiCallerDep) -> dict[str, Any]:
    return _agent(state, name).detail()


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
async def agent_chat(name: AgentName, request: Request, state: StateDep, principal: ApiCallerDep) -> Response:
    agent = _agent(state, name)
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
    orchestrator = state.orchestrator
    if chat.stream:
        stream = await orchestrator.open_stream(chat, data, ctx)
        return StreamingResponse(stream, media_type="text/event-stream", headers={**STREAM_HEADERS, **AI_HEADERS})
    body = await orchestrator.complete(chat, data, ctx)
    return Response(orjson.dumps(body), media_type="application/json", headers=AI_HEADERS)


MODELS: list[type[BaseModel]] = [ChatCompletion]
