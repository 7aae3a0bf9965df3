"""Everything with I/O is opened here, once, into a typed state, and closed in reverse order.

Routers reach the state through the dependency aliases of :mod:`app.deps`.
"""

from __future__ import annotations

import functools
import gc
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from app.agents.service import AgentsService
from app.auth import APPROVER_ID, OWNER_ID, ROLE_APPROVER, ROLE_CALLER, Authenticator, Principal, resolve_dev_token
from app.db.connection import Database
from app.db.registry import Databases
from app.errors import DatabaseUnavailable
from app.memory.service import MemoryService
from app.memory.store import MemoryStore
from app.observability.logging import flush_logs, get_logger
from app.observability.metrics import Metrics
from app.observability.otel import shutdown_spans
from app.orchestrator.service import Orchestrator
from app.orchestrator.stages import build_generator, build_stages
from app.policies import PolicySnapshot
from app.policy_files import PolicyFileError
from app.providers.base import LLMProvider
from app.providers.factory import build_provider
from app.providers.resilience import BreakerState
from app.ratelimit import RateLimiter
from app.readiness import CheckFn, Readiness
from app.receipts.checkpoints import Checkpointer, SigningKeyError, load_or_create_signer
from app.receipts.retention import PruneLog, RetentionJob, migrate_retention
from app.receipts.retention import prepare as prepare_retention
from app.receipts.store import TraceStore, TreeIncomplete
from app.receipts.tracer import Tracer
from app.receipts.trust import TrustService
from app.routing.setup import Routing, check_tool_names, load_routing_config, open_routing, register_policies
from app.settings import Settings, parse_principals
from app.tools.service import Tools, open_tools, register_tool_policy

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
    routing: Routing  # agents, the router, the review queue
    tools: Tools  # registry, tool policy, approvals, sandbox, the guarded runner
    memory: MemoryService  # the memory gate, recall, the caller's entries
    agents: AgentsService  # the agents, as the routes and other faces list and find them
    retention: RetentionJob | None = None  # the receipts' retention job, when a policy is set


def build_authenticator(settings: Settings) -> Authenticator:
    """The token table: ORCH_BEARER_TOKEN (principal "owner") plus ORCH_PRINCIPALS entries.

    With auth on, no token configured and outside production (production refuses to start
    earlier), a development token is generated once and announced on the console.
    """
    caller = frozenset({ROLE_CALLER})
    tokens: dict[str, Principal] = {}
    owner_token = settings.bearer_token.get_secret_value()
    if not owner_token and settings.auth_required:
        try:
            owner_token = resolve_dev_token(settings.dev_token_path)
        except (OSError, UnicodeDecodeError) as exc:
            # A path that cannot hold the file (a directory, a missing or read-only parent):
            # one line naming the flag, as for a bad value, rather than the server's traceback.
            raise StartupError(
                f"cannot keep the development token in ORCH_DEV_TOKEN_PATH={str(settings.dev_token_path)!r}: "
                f"{type(exc).__name__}: {exc} (set ORCH_BEARER_TOKEN, or point ORCH_DEV_TOKEN_PATH at a writable file)"
            ) from None
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
    # Tools: the approver approves tool calls and may do nothing else (separation of
    # duties); Settings already refuse an approver token equal to a configured caller token.
    approver_token = settings.approver_token.get_secret_value()
    if approver_token:
        if approver_token in tokens:
            raise StartupError("ORCH_APPROVER_TOKEN must differ from every caller's token")
        tokens[approver_token] = Principal(APPROVER_ID, authenticated=True, roles=frozenset({ROLE_APPROVER}))
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


@contextmanager
def policy_errors() -> Iterator[None]:
    """A bad policy file stops startup with its one-line reason."""
    try:
        yield
    except PolicyFileError as exc:
        raise StartupError(str(exc)) from None


def open_guards(settings: Settings, stack: AsyncExitStack) -> tuple[Authenticator, Readiness, RateLimiter | None]:
    """Who may call, how often, and the readiness checks the other parts register into."""
    authenticator = build_authenticator(settings)
    readiness = Readiness()
    limiter = None
    if settings.rate_limit_enabled:
        limiter = RateLimiter(settings.rate_limit, settings.rate_limit_storage)
        stack.push_async_callback(limiter.aclose)
        if not settings.rate_limit_storage.startswith("memory"):
            readiness.add("rate_limit_storage", limiter.readiness_check)
    return authenticator, readiness, limiter


async def _build_receipt_tree(store: TraceStore) -> None:
    """Give a ledger written before the receipt tree existed its tree nodes (once, at upgrade)."""
    started = time.perf_counter()
    try:
        written = await store.build_tree()
    except TreeIncomplete as exc:
        log.warning("the receipt tree cannot be built: %s; proofs over that part answer tree_incomplete", exc)
        return
    if written:
        log.info(
            "built the receipt tree of the existing ledger",
            extra={"nodes": written, "seconds": round(time.perf_counter() - started, 2)},
        )


def watch_breaker(provider: LLMProvider, metrics: Metrics) -> None:
    """``orch_upstream_circuit_open``: 1 while the provider's circuit breaker holds calls back (open,
    or half-open with its one probe), else 0; always 0 for a provider without an upstream (the
    demo). Read at scrape time, so an alert sees the state itself, not a rate of 503s."""
    upstream = getattr(provider, "upstream", None)
    breaker = getattr(upstream, "breaker", None)
    gauge = metrics.gauge(
        "orch_upstream_circuit_open", "1 while the model provider's circuit breaker is open or half-open, else 0."
    )
    gauge.set_function(lambda: 0.0 if breaker is None or breaker.state is BreakerState.CLOSED else 1.0)


async def open_receipts(
    settings: Settings,
    *,
    databases: Databases,
    policies: PolicySnapshot,
    metrics: Metrics,
    readiness: Readiness,
    stack: AsyncExitStack,
) -> tuple[Tracer, TrustService | None, RetentionJob | None]:
    """The trace store, its writer (drained before the databases close), the trust panel and
    the retention job (stopped before the writer)."""
    trace_store = None
    retention_on = settings.trace_retention_days > 0 or settings.trace_retention_max_mb > 0
    if settings.trace_enabled:
        trace_db = await open_database(databases, settings.trace_db_path)
        await prepare_retention(trace_db, retention_on=retention_on)
        trace_store = TraceStore(trace_db)
        await trace_store.migrate()
        await migrate_retention(trace_db)
        await _build_receipt_tree(trace_store)
        readiness.add("trace_database", database_check(trace_db))
    tracer = Tracer(
        trace_store,
        redact_pii=settings.memory_scrub_redact_pii,
        flush_interval=settings.trace_flush_interval_ms / 1000,
        queue_max=settings.trace_queue_max,
        metrics=metrics,
    )
    await tracer.start()
    checkpointer: Checkpointer | None = None

    async def drain_then_sign() -> None:
        # The writer drains first, so that the last checkpoint covers every receipt.
        await tracer.stop()
        if checkpointer is not None:
            await checkpointer.stop()

    stack.push_async_callback(drain_then_sign)
    if trace_store is None:
        return tracer, None, None
    readiness.add("receipt_writer", tracer.readiness_check)
    try:
        signer = load_or_create_signer(settings.trust_signing_key_path)
    except SigningKeyError as exc:
        raise StartupError(str(exc)) from None
    checkpointer = Checkpointer(
        trace_store,
        signer,
        origin=settings.trust_log_origin,
        interval=settings.trust_checkpoint_interval_sec,
        witness_path=settings.trust_witness_path,
    )
    await checkpointer.start()
    trust = TrustService(
        trace_store,
        tracer,
        policies,
        max_events=settings.trust_panel_max_events,
        max_value_chars=settings.trust_panel_max_value_chars,
        debug=settings.trust_panel_debug,
        checkpointer=checkpointer,
        pruned=PruneLog(trace_store.db, verifier=signer.verifier),
    )
    retention = None
    if retention_on:
        retention = RetentionJob(
            trace_store.db,
            days=settings.trace_retention_days,
            max_mb=settings.trace_retention_max_mb,
            interval=settings.trace_retention_interval_sec,
            archive_dir=settings.trace_archive_dir,
            metrics=metrics,
            signer=signer,
            origin=checkpointer.origin,
        )
        await retention.start()
        stack.push_async_callback(retention.stop)  # runs before the writer drains
    return tracer, trust, retention


async def open_memory(
    settings: Settings,
    *,
    databases: Databases,
    readiness: Readiness,
    metrics: Metrics,
    tracer: Tracer,
    stack: AsyncExitStack,
) -> MemoryService:
    """The memory store (only when ORCH_MEMORY_ENABLED=1: no file is created otherwise) and its
    TTL purge task, stopped before the databases close."""
    store = None
    if settings.memory_enabled:
        db = await open_database(databases, settings.memory_db_path)
        store = MemoryStore(db, dedupe_window_seconds=settings.memory_dedupe_window_minutes * 60)
        await store.migrate()
        readiness.add("memory_database", database_check(db))
    memory = MemoryService(store, settings, metrics, tracer=tracer)
    await memory.start()
    stack.push_async_callback(memory.stop)
    return memory


def lifespan_for(
    settings: Settings, metrics: Metrics, tracer_provider: TracerProvider | None = None
) -> LifespanFactory:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = False
        try:
            async with open_app(app):
                opened = True
                yield
        except DatabaseUnavailable:
            if opened:
                raise
            # Opened, then no answer (or lost) while the stores migrate: one line, as when opening.
            raise StartupError(f"cannot use {_database_named(settings)}: {_no_answer(settings)}") from None

    @asynccontextmanager
    async def open_app(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if tracer_provider is not None:
                # Registered first, so it runs last: after the receipts are drained.
                stack.push_async_callback(shutdown_spans, tracer_provider)
            authenticator, readiness, limiter = open_guards(settings, stack)
            databases = Databases(
                database_url=settings.database_url.get_secret_value(),
                wal=settings.sqlite_wal_enabled,
                pool_recycle=settings.db_pool_recycle,
                timeout=settings.db_timeout_sec,
            )
            stack.push_async_callback(databases.close)

            # The policy files (agents, router policy, tool policy): validated, then frozen into
            # the snapshot whose hash every receipt records.
            policies = PolicySnapshot()
            with policy_errors():
                routing_config = load_routing_config(settings)
            register_policies(settings, policies)
            register_tool_policy(policies, settings)
            policies.freeze()

            tracer, trust, retention = await open_receipts(
                settings, databases=databases, policies=policies, metrics=metrics, readiness=readiness, stack=stack
            )

            # Tools: registry, tool policy, approvals, sandbox, the guarded runner.
            approvals_db = await open_database(databases, settings.tool_approval_db_path)
            tools = await open_tools(settings, approvals_db, policies, tracer=tracer)
            stack.push_async_callback(tools.aclose)
            tools.add_readiness(readiness, required=settings.tool_sandbox_required)

            provider, default_model = build_provider(settings)
            stack.push_async_callback(provider.aclose)
            watch_breaker(provider, metrics)
            if settings.llm_enabled:
                # Bounded by ORCH_LLM_HEALTH_TIMEOUT_SEC itself (the backstop just past it).
                readiness.add("provider", provider_check(provider), timeout=settings.llm_health_timeout_sec + 1)

            # Agents and routing: the routing stage only in advanced mode (or as a shadow).
            with policy_errors():  # agents and rules may only name tools that exist
                check_tool_names(routing_config, tools.registry.names())
            with policy_errors():  # the semantic tier's model and tool vectors load here, or stop the service
                routing = await open_routing(
                    settings,
                    routing_config,
                    open_db=functools.partial(open_database, databases),
                    metrics=metrics,
                    provider=provider,
                    default_model=default_model,
                    policy_hash=policies.loaded_hash,
                    tool_runner=tools.runner,
                    tool_catalog={spec.name: spec.description for spec in tools.registry.specs()},
                    tool_policy=tools.policy,
                )
            memory = await open_memory(
                settings, databases=databases, readiness=readiness, metrics=metrics, tracer=tracer, stack=stack
            )
            orchestrator = Orchestrator(
                provider=provider,
                default_model=default_model,
                model_allowlist=settings.llm_model_allowlist,
                tracer=tracer,
                policies=policies,
                max_output_chars=settings.llm_max_output_chars,
                stages=build_stages(settings, memory=memory, routing=routing),
                request_fields=memory.request_fields(),
                metrics=metrics,
                generator=build_generator(settings, provider=provider, tool_runner=tools.runner),
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
                tools=tools,
                memory=memory,
                agents=AgentsService(routing.agents),
                retention=retention,
            )
            log.info(
                "service ready",
                extra={
                    "env": settings.env,
                    "provider": provider.name,
                    "auth_required": settings.auth_required,
                    "rate_limit": settings.rate_limit if limiter else None,
                    "database": databases.dialect,
                    "receipts": settings.trace_enabled,
                    "mode": settings.orchestrator_mode,
                    "memory": settings.memory_enabled,
                },
            )
            stack.callback(flush_logs)  # on the way out, first: write the buffered access lines
            # Everything allocated so far (modules, policies, the app) lives as long as the process:
            # move it out of the collector's view, so that a full collection under load walks only
            # what requests allocate. Measured: receipts on, 16 connections, p99 30 ms -> 8 ms.
            gc.collect(1)  # the young generations only: a full pass would walk the whole heap again
            gc.freeze()
            stack.callback(gc.unfreeze)  # at shutdown they are ordinary objects again
            yield
            log.info("service stopping")

    return lifespan


def _database_named(settings: Settings) -> str:
    return "the Postgres database (ORCH_DATABASE_URL)" if settings.database_url.get_secret_value() else "a SQLite file"


def _no_answer(settings: Settings) -> str:
    return f"no answer within ORCH_DB_TIMEOUT_SEC={settings.db_timeout_sec:g} s"


async def open_database(databases: Databases, path: Path) -> Database:
    """Open a store's database, or stop startup with one clear line saying which and why."""
    try:
        return await databases.get(path)
    except Exception as exc:
        where = "the Postgres database (ORCH_DATABASE_URL)" if databases.database_url else f"the SQLite file {path}"
        if isinstance(exc, TimeoutError | DatabaseUnavailable):
            # A server that accepts the connection and never answers (or a file kept locked).
            reason = f"no answer within ORCH_DB_TIMEOUT_SEC={databases.timeout:g} s"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        raise StartupError(f"cannot open {where}: {reason}") from None


class StartupError(RuntimeError):
    """A resource the service needs could not be opened; the message says which."""
