"""The semantic tier against the real local embedding model: what it proposes, what the guard does
with it, what it never proposes (a tool the tool policy denies), what it records, what it costs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from app.embeddings.base import Vectors
from app.observability.metrics import Metrics
from app.policy_files import PolicyFileError
from app.routing.intent import HITL_AMBIGUOUS, SEMANTIC, Guard, IntentRouter
from app.routing.policy import RoutedRequest, load_router_policy, parse_policy
from app.routing.rules import RuleRouter
from app.routing.semantic import SemanticRouter
from app.routing.setup import RoutingConfig, check_tool_names, open_semantic, semantic_texts
from app.routing.stage import RoutingStage
from app.settings import SHIPPED_ROUTER_POLICY, Settings
from app.tools.policy import ToolPolicy, load_policy
from app.tools.service import KNOWN_TOOLS, build_registry, read_tool_policy
from tests.embedding_support import local_model
from tests.fakes.tools import RecordingToolRunner
from tests.unit.test_routing_stage import AGENTS, steps, turn

SHIPPED = load_router_policy(SHIPPED_ROUTER_POLICY, agents=AGENTS)
SETTINGS = Settings(_env_file=None, tool_policy_enforce=True)  # type: ignore[call-arg]
CATALOG = {spec.name: spec.description for spec in build_registry(SETTINGS).specs()}


class CountingEmbedder:
    """The real model, counting how often and how much it is asked to embed."""

    def __init__(self) -> None:
        self.model = local_model()
        self.calls: list[int] = []

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def dimensions(self) -> int:
        return self.model.dimensions

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(len(texts))
        return await self.model.embed(texts)


class BrokenEmbedder(CountingEmbedder):
    async def embed(self, texts: Sequence[str]) -> Vectors:
        if self.calls:
            raise RuntimeError("embedding server went away")
        return await super().embed(texts)


def tool_policy(tmp_path: Path, text: str) -> ToolPolicy:
    path = tmp_path / "tool_policy.yaml"
    path.write_text(text)
    return load_policy(path, enforce=True, known_tools=KNOWN_TOOLS)


async def semantic(
    embedder: Any = None, *, policy: ToolPolicy | None = None, min_similarity: float = 0.5
) -> SemanticRouter:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        semantic_router_min_similarity=min_similarity,
    )
    return await open_semantic(
        settings,
        SHIPPED,
        CATALOG,
        policy or read_tool_policy(SETTINGS),
        embedder=embedder or local_model(),
    )


_SHIPPED: list[SemanticRouter] = []


async def router(tier: SemanticRouter | None = None) -> IntentRouter:
    if tier is None:
        if not _SHIPPED:  # the shipped tier, its tool texts embedded once for the module
            _SHIPPED.append(await semantic())
        tier = _SHIPPED[0]
    return IntentRouter(
        RuleRouter(SHIPPED, min_gap=0.05),
        Guard(min_confidence=0.85, min_gap=0.05),
        policy_hash="h",
        semantic=tier,
    )


async def test_a_paraphrase_of_a_tools_purpose_proposes_that_tool() -> None:
    decision = await (await router()).decide_local(RoutedRequest("Please summarize the text I am sending you"))
    assert decision.tier == SEMANTIC and decision.label == "tool:summarize_text"
    assert decision.review_reason is None and decision.reason == "semantic_match"
    assert decision.params == {} and not decision.extracted  # offered to the model, never run on a guess
    assert decision.confidence == pytest.approx(0.70, abs=0.02)  # an example matches far better than 0.41
    assert decision.runner_up == "tool:text_stats" and decision.gap is not None and decision.gap > 0.2
    scores = decision.evidence[SEMANTIC]
    ranked = [candidate["score"] for candidate in scores["candidates"]]
    assert ranked == sorted(ranked, reverse=True) and scores["candidates"][0]["tool"] == "summarize_text"
    assert scores["proposed"] == "summarize_text" and scores["embedder"] == "all-MiniLM-L6-v2"


async def test_a_message_for_the_model_is_not_proposed_but_its_scores_are_kept() -> None:
    decision = await (await router()).decide_local(RoutedRequest("tell me a joke about cats"))
    assert decision.label == "provider" and decision.tier is None
    scores = decision.evidence[SEMANTIC]
    assert scores["proposed"] is None and scores["candidates"][0]["score"] < 0.5
    assert decision.evidence["tiers_consulted"] == [0, SEMANTIC]


async def test_two_tools_nearly_as_close_go_to_review() -> None:
    decision = await (await router()).decide_local(RoutedRequest("summarize this text and count its words"))
    assert decision.label == "review" and decision.review_reason == HITL_AMBIGUOUS
    assert decision.target.label == "tool:summarize_text" and decision.runner_up == "tool:text_stats"
    assert decision.gap is not None and decision.gap < 0.05


async def test_a_rule_decides_first_and_the_model_is_not_asked() -> None:
    embedder = CountingEmbedder()
    tier = await semantic(embedder)
    loaded = list(embedder.calls)
    decision = await (await router(tier)).decide_local(RoutedRequest("calculate 2 + 2"))
    assert decision.tier == 0 and decision.params == {"expression": "2 + 2"}
    assert embedder.calls == loaded


async def test_tool_vectors_are_computed_once_per_policy_load() -> None:
    embedder = CountingEmbedder()
    tier = await semantic(embedder)
    texts = sum(len(values) for values in tier.texts.values())
    assert embedder.calls == [texts] and texts > 30  # every description and example, in one go
    for message in ("how many words are in this", "what's 17 times 23", "hello there"):
        await tier.score(message)
    assert embedder.calls == [texts, 1, 1, 1]  # then one text per message


async def test_a_tool_the_tool_policy_denies_is_never_proposed(tmp_path: Path) -> None:
    denied = tool_policy(
        tmp_path,
        "version: 1\nrules:\n"
        "  - {id: safe, tools: [echo, safe_calc, text_stats, summarize_text], action: allow, reason: ok}\n"
        "  - {id: no_summaries, tools: [summarize_text], action: deny, reason: not_here}\n",
    )
    assert semantic_texts(SHIPPED, CATALOG, denied).keys() == {"echo", "safe_calc", "text_stats"}
    tier = await semantic(policy=denied, min_similarity=0.0)  # any score would be proposed
    assert "summarize_text" not in tier.tools and "python_exec" not in tier.tools  # default deny too
    for message in ("Please summarize the text I am sending you", "summarize this article", "run this script"):
        decision = await (await router(tier)).decide_local(RoutedRequest(message))
        assert decision.target.label not in ("tool:summarize_text", "tool:python_exec"), message
        listed = {candidate["tool"] for candidate in decision.evidence[SEMANTIC]["candidates"]}
        assert listed <= {"echo", "safe_calc", "text_stats"}


async def test_a_tool_needing_approval_is_a_candidate_offered_not_run() -> None:
    decision = await (await router()).decide_local(RoutedRequest("please run my script"))
    assert decision.label == "tool:python_exec" and decision.params == {}


async def test_an_embedding_failure_is_no_decision_logged_and_recorded() -> None:
    tier = await semantic(BrokenEmbedder())  # loads, then fails on every message
    decision = await (await router(tier)).decide_local(RoutedRequest("Please summarize the text I am sending you"))
    assert decision.label == "provider"
    assert decision.evidence[SEMANTIC]["error"] == "embedding_failed"
    assert decision.evidence[SEMANTIC]["candidates"] == []


async def test_the_stage_offers_the_tool_records_the_step_and_counts_the_tier() -> None:
    metrics = Metrics()
    stage = RoutingStage(
        await router(),
        agents=AGENTS,
        metrics=metrics,
        advanced=True,
        intent_router=False,
        shadow=False,
        expose=False,
        review=None,
        tool_runner=RecordingToolRunner(),
    )
    offered = turn("Can you sum up this paragraph in a couple of lines?")
    await stage.run(offered)
    assert offered.gateway_tools == ["summarize_text"] and offered.answer is None
    route = offered.decisions.route_decision
    assert route is not None and route["tier"] == SEMANTIC and route["action"] == "offered"
    [step] = steps(offered, "semantic_router")
    assert step["decided"] is True and step["proposed"] == "summarize_text"
    assert [c["tool"] for c in step["candidates"]][:2] == ["summarize_text", "text_stats"]
    assert "sum up" not in str(step)  # tool names and scores, never the message
    model = turn("What is the capital of France?")
    await stage.run(model)
    [step] = steps(model, "semantic_router")
    assert step["decided"] is False and step["proposed"] is None
    text = metrics.render().decode()
    assert 'orch_routing_decisions_total{outcome="tool_offered",tier="semantic"} 1.0' in text
    assert 'orch_routing_decisions_total{outcome="provider",tier="none"} 1.0' in text


def test_examples_are_validated_with_the_rest_of_the_policy() -> None:
    def parse(semantic: Any) -> None:
        parse_policy({"rules": [], "semantic": semantic})

    parse({"tools": {"echo": {"examples": ["say it back"]}}})
    for bad, reason in (
        ({"tools": {"echo": {"examples": []}}}, "at least 1"),
        ({"tools": {"echo": {"examples": ["  "]}}}, "an example is empty"),
        ({"tools": {"echo": {"examples": ["x" * 301]}}}, "longer than 300"),
        ({"tools": {"echo": {"examples": ["ok"] * 51}}}, "at most 50"),
        ({"tools": {"not a tool": {"examples": ["ok"]}}}, "is not a tool name"),
        ({"tools": {"echo": {"examples": ["ok"], "weight": 2}}}, "weight"),
    ):
        with pytest.raises(PolicyFileError, match=reason):
            parse(bad)
    config = RoutingConfig(AGENTS, parse_policy({"semantic": {"tools": {"weather": {"examples": ["rain?"]}}}}))
    with pytest.raises(PolicyFileError, match=r"semantic\.tools: there is no tool named 'weather'"):
        check_tool_names(config, CATALOG)


def test_the_semantic_tier_needs_advanced_mode_or_the_shadow() -> None:
    with pytest.raises(ValueError, match="ORCH_SEMANTIC_ROUTER_ENABLED=1 routes only with"):
        Settings(_env_file=None, semantic_router_enabled=True)  # type: ignore[call-arg]
    assert Settings(
        _env_file=None,  # type: ignore[call-arg]
        semantic_router_enabled=True,
        orchestrator_mode="advanced",
    ).semantic_router_min_similarity == pytest.approx(0.5)


async def test_with_the_intent_router_the_cache_comes_first_and_the_classifier_last(tmp_path: Path) -> None:
    from app.db.connection import SqliteDatabase
    from app.routing.classifier import ProviderClassifier
    from app.routing.intent import signature
    from app.routing.store import IntentCacheStore
    from tests.unit.test_intent_router import ScriptedProvider

    db = await SqliteDatabase(tmp_path / "cache.db").open()
    try:
        cache = IntentCacheStore(db, ttl_seconds=600)
        await cache.migrate()
        embedder = CountingEmbedder()
        provider = ScriptedProvider('{"route": "provider", "confidence": 0.9}')
        full = IntentRouter(
            RuleRouter(SHIPPED, min_gap=0.05),
            Guard(min_confidence=0.85, min_gap=0.05),
            policy_hash="h",
            cache=cache,
            classifier=ProviderClassifier(provider, model="m", labels=SHIPPED.labels()),  # type: ignore[arg-type]
            semantic=await semantic(embedder),
        )
        loaded = len(embedder.calls)
        # a confident semantic proposal decides: no model call
        offered = await full.decide(RoutedRequest("I need a brief overview of the following report"))
        assert offered.tier == SEMANTIC and offered.label == "tool:summarize_text" and provider.requests == []
        assert not offered.cacheable  # recomputing it costs one embedding, no model call
        # nothing near enough: the classifier is asked, and the scores go with its decision
        asked = await full.decide(RoutedRequest("Write a poem about the sea"))
        assert asked.tier == 2 and len(provider.requests) == 1
        assert asked.evidence[SEMANTIC]["proposed"] is None and asked.evidence[SEMANTIC]["candidates"]
        # a remembered decision (a human's resolution) comes before the embedding
        await cache.put("h", signature("summarize this text and count its words"), {"route": "tool:text_stats",
                        "confidence": 1.0, "source": "review"})  # fmt: skip
        calls = len(embedder.calls)
        resolved = await full.decide(RoutedRequest("summarize this text and count its words"))
        assert resolved.tier == 1 and resolved.label == "tool:text_stats" and len(embedder.calls) == calls
        assert calls == loaded + 2
    finally:
        await db.close()


def test_a_message_is_embedded_by_its_first_and_last_sentence() -> None:
    from app.routing.semantic import SEGMENT_CHARS, segments

    assert segments("Please summarize the text I am sending you") == ["Please summarize the text I am sending you"]
    assert segments("  What is 2+2?  ") == ["What is 2+2?"]  # a final full stop is no boundary
    assert segments("Can you summarize the following?\nOne. Two. Three.") == [
        "Can you summarize the following?",
        "Three.",
    ]
    assert segments("Count the words: a b c") == ["Count the words:", "a b c"]
    assert segments("Version 3.11.7 is installed") == ["Version 3.11.7 is installed"]  # no space after the dot
    long = "Summarize this report. " + "x" * 20_000
    parts = segments(long)
    assert parts[0] == "Summarize this report." and all(len(part) <= SEGMENT_CHARS for part in parts)
    assert segments("   ") == [] and segments("\n\n") == []
    # many boundaries: one scan, the first and the last kept
    assert segments("a.\n" * 4000) == ["a."] and segments("\n" * 9000 + "x") == []
    beyond = segments("Hi. " + "x. " * 3000 + "Count the words.")  # past the 8000 characters searched
    assert beyond[0] == "Hi." and "Count" not in beyond[-1]


async def test_a_request_carrying_a_long_text_costs_two_short_embeddings() -> None:
    embedder = CountingEmbedder()
    tier = await semantic(embedder)
    report = "Please give me a short summary of this report. " + "The quarterly numbers went up again. " * 200
    result = await tier.score(report)
    assert embedder.calls[-1] == 2 and result.segments == 2
    assert result.proposed == "summarize_text" and result.top is not None and result.top[1] > 0.7
