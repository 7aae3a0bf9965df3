"""Everything with I/O is opened here, once, into a typed state, and closed in reverse order.

Routers reach the state through the dependency aliases of :mod:`app.deps`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from app.auth import OWNER_ID, ROLE_CALLER, Authenticator, Principal, resolve_dev_token
from app.db.connection import Database
from app.db.registry import Databases
from app.observability.logging import flush_logs, get_logger
from app.observability.metrics import Metrics
from app.orchestrator.service import Orchestrator
from app.policies import PolicySnapshot
from app.policy_files import PolicyFileError
from app.providers.base import LLMProvider
from app.providers.factory import build_provider
from app.ratelimit import RateLimiter
from app.readiness import CheckFn, Readiness
from app.routing.setup import Routing, load_routing_config, open_routing, register_policies
from app.settings import Settings, parse_principals
from app.tracing.store import TraceStore
from app.tracing.tracer import Tracer
from app.tracing.trust import TrustService

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
    databases: Databases
    tracer: Tracer
    trust: TrustService | None
    policies: PolicySnapshot
    routing: Routing  # agents, the router, the review queue (issue 7)


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


def database_check(db: Database) -> CheckFn:
    async def check() -> tuple[bool, str]:
        return (True, "ok") if await db.ping() else (False, "database_unavailable")

    return check


LifespanFactory = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def lifespan_for(
    settings: Settings, metrics: Metrics, tracer_provider: TracerProvider | None = None
) -> LifespanFactory:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            authenticator = build_authenticator(settings)
            readiness = Readiness()
            limiter = None
            if settings.rate_limit_enabled:
                limiter = RateLimiter(settings.rate_limit, settings.rate_limit_storage)
                stack.push_async_callback(limiter.aclose)
                if not settings.rate_limit_storage.startswith("memory"):
                    readiness.add("rate_limit_storage", limiter.readiness_check)

            databases = Databases(
                database_url=settings.database_url.get_secret_value(),
                wal=settings.sqlite_wal_enabled,
                pool_recycle=settings.db_pool_recycle,
            )
            stack.push_async_callback(databases.close)
            policies = PolicySnapshot()
            # --- agents and the router policy: validated here, part of the snapshot ---
            try:
                routing_config = load_routing_config(settings)
            except PolicyFileError as exc:
                log.error("invalid policy file", extra={"error": str(exc)})
                raise StartupError(str(exc)) from None
            register_policies(settings, policies)
            policies.freeze()

            trace_store = None
            if settings.trace_enabled:
                trace_db = await open_database(databases, settings.trace_db_path)
                trace_store = TraceStore(trace_db)
                await trace_store.migrate()
                readiness.add("trace_database", database_check(trace_db))
            tracer = Tracer(
                trace_store,
                redact_pii=settings.memory_scrub_redact_pii,
                flush_interval=settings.trace_flush_interval_ms / 1000,
                queue_max=settings.trace_queue_max,
                metrics=metrics,
            )
            await tracer.start()
            stack.push_async_callback(tracer.stop)  # runs before the databases close: drains the queue
            trust = None
            if trace_store is not None:
                trust = TrustService(
                    trace_store,
                    tracer,
                    policies,
                    max_events=settings.trust_panel_max_events,
                    max_value_chars=settings.trust_panel_max_value_chars,
                    debug=settings.trust_panel_debug,
                )

            provider, default_model = build_provider(settings)
            stack.push_async_callback(provider.aclose)
            if settings.llm_enabled:
                readiness.add("provider", provider_check(provider))
            # --- agents and routing: the agent stage always, the routing stage when enabled ---
            routing = await open_routing(
                settings,
                routing_config,
                open_db=functools.partial(open_database, databases),
                metrics=metrics,
                provider=provider,
                default_model=default_model,
                policy_hash=policies.loaded_hash,
                tool_runner=None,  # the ToolRunner (feature/tools) is passed here once merged
            )
            orchestrator = Orchestrator(
                provider=provider,
                default_model=default_model,
                model_allowlist=settings.llm_model_allowlist,
                tracer=tracer,
                policies=policies,
                max_output_chars=settings.llm_max_output_chars,
                stages=routing.stages,
            )
            app.state.orch = AppState(
                settings=settings,
                metrics=metrics,
                authenticator=authenticator,
                limiter=limiter,
                provider=provider,
                orchestrator=orchestrator,
                readiness=readiness,
                databases=databases,
                tracer=tracer,
                trust=trust,
                policies=policies,
                routing=routing,
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
                    "database": databases.dialect,
                    "receipts": settings.trace_enabled,
                },
            )
            stack.callback(flush_logs)  # on the way out, first: write the buffered access lines
            yield
            log.info("service stopping")

    return lifespan


async def open_database(databases: Databases, path: Path) -> Database:
    """Open a store's database, or stop startup with one clear line saying which and why."""
    try:
        return await databases.get(path)
    except Exception as exc:
        where = "the Postgres database (ORCH_DATABASE_URL)" if databases.database_url else f"the SQLite file {path}"
        log.error("cannot open the database", extra={"where": where, "error_type": type(exc).__name__})
        raise StartupError(f"cannot open {where}: {type(exc).__name__}: {exc}") from None


class StartupError(RuntimeError):
    """A resource the service needs could not be opened; the message says which."""
