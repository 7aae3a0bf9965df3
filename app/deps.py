"""Dependencies and their ``Annotated`` aliases: how routers reach the services and the caller.

Routers take one service per resource (``ToolsDep``, ``MemoryDep``, ``ReviewDep``, ``AgentsDep``)
and the principal; only this module reads ``request.app.state``.

The caller is derived once per request, here: the API switch, bearer auth and the rate limit are
one dependency so that a protected route pays for a single dependency call.
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Annotated

from fastapi import Depends, Request
from starlette.types import Scope

from app.agents.service import AgentsService
from app.agents.stage import agent_from_model
from app.auth import ANONYMOUS, ROLE_APPROVER, ROLE_CALLER, Principal
from app.errors import AuthenticationFailed, InvalidRequest, PermissionDenied, RateLimited, ServiceUnavailable
from app.lifespan import AppState
from app.memory.service import MemoryService
from app.observability.middleware import STATE_PRINCIPAL, STATE_REQUEST_ID, add_response_headers
from app.orchestrator.service import Orchestrator
from app.orchestrator.turn import CallContext
from app.routing.review import ReviewService
from app.schemas.chat import ChatCompletionRequest
from app.tools.service import Tools


# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread
# pool, which costs more than the whole rest of a demo-mode request.
def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.orch
    return state


async def get_state(request: Request) -> AppState:
    return app_state(request)


async def get_orchestrator(request: Request) -> Orchestrator:
    return app_state(request).orchestrator


async def get_tools(request: Request) -> Tools:
    return app_state(request).tools


async def get_memory(request: Request, _: Annotated[Principal, Depends(api_caller)]) -> MemoryService:
    """The memory service, once the caller is known: with memory off, 503 naming the flag (after
    auth, so that strangers cannot tell)."""
    memory = app_state(request).memory
    memory.require_enabled()
    return memory


async def get_agents(request: Request) -> AgentsService:
    return app_state(request).agents


async def get_review(request: Request) -> ReviewService:
    """The human-review queue of routing; 503 naming the flags while it is off."""
    review = app_state(request).routing.review
    if review is None:
        raise ServiceUnavailable(
            "The human-review queue is off: it needs ORCH_ORCHESTRATOR_MODE=advanced and ORCH_INTENT_HITL_ENABLED=1.",
            code="review_queue_disabled",
        )
    return review


def is_our_token(scope: Scope, value: str) -> bool:
    """Whether ``value`` is one of the bearer tokens the service accepts (owner, principals,
    approver); the request middleware asks, so that a token sent as X-Request-ID is not echoed."""
    # None before the lifespan has opened the state: nothing is a token yet.
    state: AppState | None = getattr(scope["app"].state, "orch", None)
    return state is not None and state.authenticator.identify(f"Bearer {value}") is not None


def request_id(request: Request) -> str:
    rid: str = request.scope["state"][STATE_REQUEST_ID]
    return rid


_META_PREFIX = b"x-orch-meta-"
_MAX_META_HEADERS = 32
_MAX_META_VALUE = 256
_DEBUG_VALUES = frozenset({"1", "true", "yes"})


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
    """What every chat route passes on for agents and routing: ``model: "agent:<name>"``,
    ``?debug=1`` and the ``X-Orch-Meta-*`` headers (read only when the routing stage runs)."""
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
    if app_state(request).routing.active:
        ctx.metadata = metadata_headers(request.scope)


def client_address(request: Request, trusted_proxies: list[str]) -> str:
    """The caller's address; X-Forwarded-For is honoured only from a configured trusted proxy."""
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies or peer not in trusted_proxies:
        return peer
    # Every X-Forwarded-For line, in order: a proxy that adds its own line after the caller's
    # must not leave the caller's (forgeable) line as the one that is read.
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    # Walk from the nearest hop back, skipping our own proxies: the first other hop is the client.
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if hop not in trusted_proxies:
            try:
                return str(ip_address(hop))
            except ValueError:
                return peer
    return peer


async def _identify(request: Request, *, rate_limited: bool) -> Principal:
    state = app_state(request)
    settings = state.settings
    principal = state.authenticator.identify(request.headers.get("authorization"))
    if principal is not None:
        request.scope["state"][STATE_PRINCIPAL] = principal.id  # in the access line, even of a 429
    if state.limiter is not None and (rate_limited or principal is None):
        # Only a *valid* token buys its own bucket; anything else is counted against the address,
        # so rotating random bearer strings does not escape the limit. Routes without a rate
        # limit (/metrics) still count failed attempts: no free guessing of tokens there.
        key = f"p:{principal.id}" if principal else "ip:" + client_address(request, settings.trusted_proxies)
        outcome = await state.limiter.hit(key)
        if outcome is not None:
            headers = outcome.headers()
            add_response_headers(request.scope, headers)
            if not outcome.allowed:
                raise RateLimited(f"Rate limit exceeded: {settings.rate_limit}. Retry later.")
    if principal is None:
        if state.authenticator.required:
            raise AuthenticationFailed()
        principal = ANONYMOUS
    request.scope["state"][STATE_PRINCIPAL] = principal.id
    return principal


async def authenticated(request: Request) -> Principal:
    """Bearer auth, not rate limited once authenticated (a scraper's polling is not counted), for
    /metrics. The approver's token is refused: it can do nothing but approve."""
    return _only_callers(await _identify(request, rate_limited=False))


def _only_callers(principal: Principal) -> Principal:
    # Separation of duties (tools): the approver's token approves tool calls and
    # nothing else, so it can never ask for (and then approve) a call itself.
    if not principal.has_role(ROLE_CALLER):
        raise PermissionDenied(
            "This token may only be used on the approval and review routes "
            "(/v1/tools/approve, /v1/tools/approvals, /v1/review).",
            code="approver_token_not_allowed",
        )
    return principal


async def caller(request: Request) -> Principal:
    """Auth plus rate limit: routes outside /v1 (e.g. /echo)."""
    return _only_callers(await _identify(request, rate_limited=True))


async def api_caller(request: Request) -> Principal:
    """The /v1 guard: the API switch, then auth plus rate limit."""
    if not app_state(request).settings.enable_api:
        raise ServiceUnavailable("The API is disabled (ORCH_ENABLE_API=0).", code="api_disabled")
    return _only_callers(await _identify(request, rate_limited=True))


async def api_caller_or_approver(request: Request) -> Principal:
    """The API switch, auth and rate limit, for the few reads open to both roles (one review item:
    its requester or an approver; the route itself decides which item each may see)."""
    if not app_state(request).settings.enable_api:
        raise ServiceUnavailable("The API is disabled (ORCH_ENABLE_API=0).", code="api_disabled")
    return await _identify(request, rate_limited=True)


async def approver(request: Request) -> Principal:
    """The guard of approval and review routes: the API switch, auth, rate limit, and the approver role.

    A caller's token gets 403 here; with no ORCH_APPROVER_TOKEN nobody may approve (403 naming it).
    """
    state = app_state(request)
    if not state.settings.enable_api:
        raise ServiceUnavailable("The API is disabled (ORCH_ENABLE_API=0).", code="api_disabled")
    principal = await _identify(request, rate_limited=True)
    if not state.settings.approver_token.get_secret_value():
        raise PermissionDenied(
            "Approvals are refused: no approver credential is configured. Set ORCH_APPROVER_TOKEN "
            "(a bearer token different from every caller's) and approve with it.",
            code="approver_not_configured",
        )
    if not principal.has_role(ROLE_APPROVER):
        raise PermissionDenied(
            "Only the approver (the ORCH_APPROVER_TOKEN bearer) may approve or deny tool calls and resolve "
            "reviews; the principal that asks to run something can not approve it.",
            code="approver_required",
        )
    return principal


StateDep = Annotated[AppState, Depends(get_state)]
OrchestratorDep = Annotated[Orchestrator, Depends(get_orchestrator)]
ToolsDep = Annotated[Tools, Depends(get_tools)]
MemoryDep = Annotated[MemoryService, Depends(get_memory)]
ReviewDep = Annotated[ReviewService, Depends(get_review)]
AgentsDep = Annotated[AgentsService, Depends(get_agents)]
AuthenticatedDep = Annotated[Principal, Depends(authenticated)]
CallerDep = Annotated[Principal, Depends(caller)]
ApiCallerDep = Annotated[Principal, Depends(api_caller)]
ApproverDep = Annotated[Principal, Depends(approver)]
ApiCallerOrApproverDep = Annotated[Principal, Depends(api_caller_or_approver)]
