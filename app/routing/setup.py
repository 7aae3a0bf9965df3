"""Wiring agents and routing into the app: load and validate the policy files, open the stores,
build the routing stage (:mod:`app.orchestrator.stages` puts it in the pipeline). Called from the
lifespan (and, to fail before serving, from :func:`app.main.app_from_environment`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.agents.registry import FLAG as AGENT_FLAG
from app.agents.registry import AgentRegistry, load_agents
from app.db.connection import Database
from app.observability.logging import get_logger
from app.observability.metrics import Metrics
from app.policies import PolicySnapshot
from app.policy_files import PolicyFileError
from app.providers.base import LLMProvider
from app.routing.classifier import PROMPT_VERSION, ProviderClassifier
from app.routing.intent import Guard, IntentRouter
from app.routing.policy import FLAG as POLICY_FLAG
from app.routing.policy import RouterPolicy, load_router_policy
from app.routing.review import ReviewService
from app.routing.rules import RuleRouter
from app.routing.stage import RoutingStage
from app.routing.store import IntentCacheStore, ReviewStore
from app.settings import SHIPPED_ROUTER_POLICY, Settings
from app.tools.policy import ToolPolicy
from app.tools.types import ToolRunner

if TYPE_CHECKING:  # numpy is imported only when the semantic tier is on
    from app.embeddings.base import Embedder
    from app.routing.semantic import SemanticRouter

log = get_logger("routing")

# The semantic tier's embedder: its name is in the policy snapshot, because the thresholds are
# calibrated to it (a different model's cosines are on another scale).
LOCAL_EMBEDDER = "all-MiniLM-L6-v2"

OpenDatabase = Callable[[Path], Awaitable[Database]]


@dataclass(slots=True)
class RoutingConfig:
    """The validated policy files."""

    agents: AgentRegistry
    policy: RouterPolicy


def load_routing_config(settings: Settings) -> RoutingConfig:
    """Read and validate the agents and the router policy; raise PolicyFileError (one line).

    The shipped policy's rules for the shipped agent (Holly) are left out when ORCH_AGENT_DIR
    does not have her: replacing the agents must not require writing a router policy too. A
    policy of the operator's own that names a missing agent is refused, as any other mistake in it.
    """
    allowlist = settings.llm_model_allowlist
    agents = load_agents(settings.agent_dir, model_allowlist=allowlist)
    policy = load_router_policy(
        settings.router_policy_path,
        agents=agents,
        model_allowlist=allowlist,
        skip_missing_agents=settings.router_policy_path.resolve() == SHIPPED_ROUTER_POLICY,
    )
    return RoutingConfig(agents, policy)


def check_tool_names(config: RoutingConfig, known: Collection[str]) -> None:
    """Refuse agents and rules that name tools the tool registry does not have (call it at startup
    once the registry is known; raise PolicyFileError naming the first culprit)."""
    available = set(known)
    for agent in config.agents.all():
        missing = [tool for tool in agent.tools if tool not in available]
        if missing:
            raise PolicyFileError(f"{AGENT_FLAG}: {config.agents.source(agent)}: tools: no such tool {missing}")
    where = f"{config.policy.path}: " if config.policy.path else ""
    for rule in config.policy.rules:
        if rule.target.kind == "tool" and rule.target.name not in available:
            raise PolicyFileError(
                f"{POLICY_FLAG}: {where}rule {rule.id!r}: there is no tool named {rule.target.name!r}"
            )
    for name in config.policy.examples:
        if name not in available:
            raise PolicyFileError(f"{POLICY_FLAG}: {where}semantic.tools: there is no tool named {name!r}")


def semantic_texts(
    policy: RouterPolicy, catalog: Mapping[str, str], tool_policy: ToolPolicy | None
) -> dict[str, list[str]]:
    """Each candidate tool's texts for the semantic tier: ``"<name>: <description>"`` and the
    policy's examples. A tool the tool policy denies whatever the arguments is no candidate."""
    from app.routing.semantic import tool_text

    texts: dict[str, list[str]] = {}
    for name, description in catalog.items():
        if tool_policy is not None and not tool_policy.may_offer(name):
            continue
        texts[name] = [tool_text(name, description), *policy.examples.get(name, ())]
    return texts


async def open_semantic(
    settings: Settings,
    policy: RouterPolicy,
    catalog: Mapping[str, str],
    tool_policy: ToolPolicy | None,
    *,
    embedder: Embedder | None = None,
) -> SemanticRouter:
    """Load the local embedding model (unless given one) and embed the tool texts (once per policy
    load). A failure stops the service with the reason: the operator asked for this tier."""
    from app.embeddings.base import EmbeddingError
    from app.embeddings.minilm import MiniLM
    from app.routing.semantic import SemanticRouter

    try:
        if embedder is None:
            embedder = await asyncio.to_thread(MiniLM)
        router = SemanticRouter(
            embedder,
            semantic_texts(policy, catalog, tool_policy),
            min_similarity=settings.semantic_router_min_similarity,
            min_gap=settings.semantic_router_min_gap,
        )
        await router.load()
    except EmbeddingError as exc:
        raise PolicyFileError(f"ORCH_SEMANTIC_ROUTER_ENABLED=1: {exc}") from None
    left_out = sorted(set(catalog) - set(router.tools))
    if left_out:
        log.info("semantic router: tools the tool policy denies are no candidates", extra={"tools": left_out})
    return router


def register_policies(settings: Settings, policies: PolicySnapshot) -> None:
    """Put the files (and the switches that change what they mean) into the policy snapshot."""
    policies.register("agents", settings.agent_dir)
    policies.register(
        "router_policy",
        settings.router_policy_path,
        mode=settings.orchestrator_mode,
        intent_router=settings.intent_router_enabled,
        shadow=settings.intent_router_shadow,
        min_confidence=settings.intent_min_confidence,
        min_gap=settings.intent_min_gap,
        classifier=settings.intent_classifier_enabled,
        classifier_model=settings.intent_classifier_model,
        classifier_prompt=PROMPT_VERSION,
        semantic=settings.semantic_router_enabled,
        semantic_embedder=LOCAL_EMBEDDER if settings.semantic_router_enabled else "",
        semantic_min_similarity=settings.semantic_router_min_similarity,
        semantic_min_gap=settings.semantic_router_min_gap,
    )


def routing_active(settings: Settings) -> bool:
    """Whether the routing stage runs at all (advanced mode, or the shadow beside basic mode)."""
    return settings.orchestrator_mode == "advanced" or settings.intent_router_shadow


@dataclass(slots=True)
class Routing:
    """What the app keeps of agents and routing."""

    agents: AgentRegistry
    policy: RouterPolicy
    stage: RoutingStage | None = None  # None unless routing is active (advanced mode or the shadow)
    review: ReviewService | None = None
    cache: IntentCacheStore | None = None

    @property
    def active(self) -> bool:
        """The chat routes collect request metadata (X-Orch-Meta-* headers) only when this is on."""
        return self.stage is not None


async def open_routing(
    settings: Settings,
    config: RoutingConfig,
    *,
    open_db: OpenDatabase,
    metrics: Metrics,
    provider: LLMProvider,
    default_model: str,
    policy_hash: str,
    tool_runner: ToolRunner | None,
    tool_catalog: Mapping[str, str] | None = None,
    tool_policy: ToolPolicy | None = None,
) -> Routing:
    routing = Routing(config.agents, config.policy)
    if not routing_active(settings):
        return routing
    if config.policy.skipped:
        log.warning(
            "shipped router policy rules left out: they name agents ORCH_AGENT_DIR does not have",
            extra={
                "rules": [rule for rule, _ in config.policy.skipped],
                "agents": [a for _, a in config.policy.skipped],
            },
        )
    cache = None
    if settings.intent_router_enabled and settings.intent_cache_enabled:
        cache_db = await open_db(settings.intent_cache_db_path)
        cache = IntentCacheStore(cache_db, ttl_seconds=settings.intent_cache_ttl_sec)
        await cache.migrate()
    classifier = None
    if settings.intent_router_enabled and settings.intent_classifier_enabled:
        classifier = ProviderClassifier(
            provider, model=settings.intent_classifier_model or default_model, labels=config.policy.labels()
        )
    review = None
    if settings.intent_hitl_enabled:
        store = ReviewStore(await open_db(settings.intent_hitl_db_path))
        await store.migrate()
        review = ReviewService(
            store,
            agents=config.agents,
            tools=tool_runner.tool_names() if tool_runner is not None else frozenset(),
            cache=cache,
            model_allowlist=frozenset(settings.llm_model_allowlist),
            redact_pii=settings.memory_scrub_redact_pii,
        )
    semantic = None
    if settings.semantic_router_enabled and tool_runner is not None:
        semantic = await open_semantic(settings, config.policy, tool_catalog or {}, tool_policy)
    router = IntentRouter(
        RuleRouter(config.policy, min_gap=settings.intent_min_gap),
        Guard(min_confidence=settings.intent_min_confidence, min_gap=settings.intent_min_gap),
        policy_hash=policy_hash,
        cache=cache,
        classifier=classifier,
        semantic=semantic,
    )
    stage = RoutingStage(
        router,
        agents=config.agents,
        metrics=metrics,
        advanced=settings.orchestrator_mode == "advanced",
        intent_router=settings.intent_router_enabled,
        shadow=settings.intent_router_shadow,
        expose=settings.intent_decision_expose,
        review=review,
        tool_runner=tool_runner,
    )
    if tool_runner is None and any(rule.target.kind == "tool" for rule in config.policy.rules):
        log.warning("router rules target tools but no tool runner is wired in: those requests go to the model")
    routing.stage, routing.review, routing.cache = stage, review, cache
    log.info(
        "routing on",
        extra={
            "mode": settings.orchestrator_mode,
            "rules": len(config.policy.rules),
            "agents": len(config.agents),
            "intent_router": settings.intent_router_enabled,
            "shadow": settings.intent_router_shadow,
            "cache": cache is not None,
            "classifier": classifier is not None,
            "semantic": semantic.tools if semantic is not None else None,
            "review_queue": review is not None,
        },
    )
    return routing
