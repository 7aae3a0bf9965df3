"""Everything with I/O is opened here, once, into a typed state, and closed in reverse order.

Routers reach the state through the dependency aliases of :mod:`app.deps`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import FastAPI

from app.auth import OWNER_ID, ROLE_CALLER, Authenticator, Principal, resolve_dev_token
from app.observability.logging import get_logger
from app.observability.metrics import Metrics
from app.orchestrator.service import Orchestrator
from app.providers.base import LLMProvider
from app.providers.factory import build_provider
from app.ratelimit import RateLimiter
from app.readiness import CheckFn, Readiness
from app.settings import Settings, parse_principals

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = get_logger("lifespan")


@dataclass(slots=True)
class AppState:
    """The long-lived objects of one running app."""

    settings: Settings
    metrics: Metrics
    authenticator: Authenticator
    limiter: RateLimiter | None
    provider: LLMProvider
    orchestrator: Orchestrator
    readiness: Readiness


def build_authenticator(settings: Settings) -> Authenticator:
    """The token table: ORCH_BEARER_TOKEN (principal "owner") plus ORCH_PRINCIPALS entries.

    With auth on, no token configured and outside production (production refuses to start
    earlier), a development token is generated once and announced on the console.
    """
    caller = frozenset({ROLE_CALLER})
    tokens: dict[str, Principal] = {}
    owner_token = settings.bearer_token.get_secret_value()
    if not owner_token and settings.auth_required:
        owner_token = resolve_dev_token(settings.dev_token_path)
        # Printed, not logged: this is the one place the token is shown, so the user can call us.
        print(
            f"orchestrators: auth is on and ORCH_BEARER_TOKEN is not set; use this development token:\n"
            f"    Authorization: Bearer {owner_token}\n"
            f"  (kept in {settings.dev_token_path}; set ORCH_BEARER_TOKEN in .env to choose your own)",
            file=sys.stderr,
            flush=True,
        )
    elif owner_token:
        log.info(
            "bearer auth uses the token from ORCH_BEARER_TOKEN",
            extra={"auth_required": settings.auth_required},
        )
    if owner_token:
        tokens[owner_token] = Principal(OWNER_ID, authenticated=True, roles=caller)
    for name, token in parse_principals(settings.principals.get_secret_value()).items():
        if token in tokens:
            raise ValueError(f"ORCH_PRINCIPALS: the token of {name!r} is already used by another principal")
        tokens[token] = Principal(name, authenticated=True, roles=caller)
    return Authenticator(tokens, required=settings.auth_required)


def provider_check(provider: LLMProvider) -> CheckFn:
    async def check() -> tuple[bool, str]:
        health = await provider.health()
        return health.ok, health.reason

    return check


def lifespan_for(settings: Settings, metrics: Metrics, tracer_provider: TracerProvider | None = None):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            authenticator = build_authenticator(settings)
            limiter = None
            if settings.rate_limit_enabled:
                limiter = RateLimiter(settings.rate_limit, settings.rate_limit_storage)
                stack.push_async_callback(limiter.aclose)
            readiness = Readiness()
            if limiter is not None and not settings.rate_limit_storage.startswith("memory"):
                readiness.add("rate_limit_storage", limiter.readiness_check)
            provider, default_model = build_provider(settings)
            stack.push_async_callback(provider.aclose)
            if settings.llm_enabled:
                readiness.add("provider", provider_check(provider))
            orchestrator = Orchestrator(
                provider=provider,
                default_model=default_model,
                model_allowlist=settings.llm_model_allowlist,
                max_output_chars=settings.llm_max_output_chars,
            )
            app.state.orch = AppState(
                settings=settings,
                metrics=metrics,
                authenticator=authenticator,
                limiter=limiter,
                provider=provider,
                orchestrator=orchestrator,
                readiness=readiness,
            )
            if tracer_provider is not None:
                stack.callback(tracer_provider.shutdown)
            log.info(
                "service ready",
                extra={
                    "env": settings.env,
                    "provider": provider.name,
                    "auth_required": settings.auth_required,
                    "rate_limit": settings.rate_limit if limiter else None,
                },
            )
            yield
            log.info("service stopping")

    return lifespan
