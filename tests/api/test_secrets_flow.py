"""Property (hypothesis): secrets of every kind the scrubber knows, written every way the strategies
know, sent through every way in (chat, POST /v1/memory, a tool's arguments and output, a tool
argument's name that comes back in an error, a message held for human review), never reach a
store, a file (the SQLite databases with their -wal and -shm files, read as raw bytes while the
service runs and after it stopped), the log, /metrics, the receipts export, the trust panel, or
what the upstream model is sent through recall.

The app is the real one (memory on with recall, trust panel on, advanced routing with a rule that
holds requests for review) in front of a real HTTP upstream on a loopback port that records
every request body.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from app.auth import OWNER_ID
from app.lifespan import AppState
from app.main import create_app
from app.memory.gate import content_hash
from app.memory.store import owner_hash
from app.observability.logging import LOGGER_NAME, JsonFormatter, configure_logging, flush_logs
from tests.conftest import build_settings, running
from tests.fakes.upstream import fake_upstream
from tests.secrets_strategies import PLAIN_SENTENCES, message_with_secret

APPROVER = {"Authorization": "Bearer test-approver-token-0123456789"}
CHAT = "/v1/chat/completions"
KEPT = "remember that the deploy password policy needs twelve characters and a token rotation"
FOLLOW_UP = "what is the deploy password policy and the token rotation?"


def _policy(tmp: Path) -> Path:
    """A rule too unsure to act alone: every "repeat ..." request waits for a person."""
    path = tmp / "router_policy.yaml"
    path.write_text(
        "rules:\n"
        "  - id: weak-echo\n"
        "    when: {message: '^repeat (?P<message>.+)$'}\n"
        "    target: {tool: echo}\n"
        "    confidence: 0.6\n"
    )
    return path


def _files(tmp: Path) -> str:
    """Every file the service wrote (databases, -wal, -shm), as raw bytes decoded leniently."""
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(tmp.iterdir()) if p.is_file())


async def _exercise(cases: list[tuple[str, str, str]], policy: str, log: io.StringIO) -> dict[str, str]:
    """Send every case in every way; return what each place holds, by place."""
    seen: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        async with fake_upstream() as upstream:
            app = create_app(
                build_settings(
                    tmp,
                    llm_enabled=True,
                    llm_provider="openai",
                    openai_base_url=upstream.url,
                    llm_timeout_sec=5,
                    memory_enabled=True,
                    memory_capture_enabled=True,
                    memory_recall_enabled=True,
                    memory_write_policy=policy,
                    trust_panel_enabled=True,
                    orchestrator_mode="advanced",
                    router_policy_path=_policy(tmp),
                    intent_router_enabled=True,
                    approver_token="test-approver-token-0123456789",
                    log_level="DEBUG",
                )
            )
            # the service's logging is configured (see the test); this handler sees the same records
            # through the service's formatter
            handler = logging.StreamHandler(log)
            handler.setFormatter(JsonFormatter())
            logging.getLogger().addHandler(handler)
            try:
                async with running(app) as client:
                    state: AppState = app.state.orch
                    kept = await client.post("/v1/memory", json={"content": KEPT})
                    assert kept.status_code in (200, 201), kept.text
                    for message, _, kind in cases:
                        chat = await client.post(CHAT, json={"messages": [{"role": "user", "content": message}]})
                        assert chat.status_code == 200, chat.text
                        assert chat.json()["memory_decision"]["reason"] == "deny:sensitive_content", kind
                        posted = await client.post("/v1/memory", json={"content": message})
                        assert posted.status_code == 400 and posted.json()["error"]["code"] == "sensitive_content", kind
                        echoed = await client.post(
                            "/v1/tools/execute", json={"name": "echo", "args": {"message": message}}
                        )
                        assert echoed.status_code == 200 and echoed.json()["result"]["status"] == "ok", echoed.text
                        # an argument's name the tool does not take comes back in the error's message and param
                        named = await client.post(
                            "/v1/tools/execute", json={"name": "echo", "args": {"message": "hi", message: 1}}
                        )
                        assert named.status_code == 400, named.text
                        held = await client.post(
                            CHAT,
                            json={"messages": [{"role": "user", "content": "repeat " + " ".join(message.split())}]},
                        )
                        assert held.json()["route_decision"]["reason"] == "hitl_low_confidence", held.text
                        answer = held.json()["choices"][0]["message"]["content"]
                        seen["tool output, errors, review answer"] = (
                            seen.get("tool output, errors, review answer", "") + echoed.text + named.text + answer
                        )
                    recalled = await client.post(CHAT, json={"messages": [{"role": "user", "content": FOLLOW_UP}]})
                    assert recalled.status_code == 200, recalled.text
                    await state.tracer.flush()
                    seen["memory api"] = (await client.get("/v1/memory")).text
                    seen["review queue"] = (await client.get("/v1/review?status=all", headers=APPROVER)).text
                    seen["metrics"] = (await client.get("/metrics")).text
                    seen["trust panel"] = (await client.get("/v1/trust/events?limit=500")).text
                    ledger = await client.get("/v1/trust/ledger")
                    assert ledger.status_code == 200, ledger.text
                    seen["receipts export"] = ledger.text
                    seen["files while running"] = _files(tmp)
            finally:
                logging.getLogger().removeHandler(handler)
            requests = upstream.requests
        seen["files after stop"] = _files(tmp)
    # The model is sent the message it is asked about (that is the chat); what recall adds to
    # any request, and the whole of the follow-up request, must hold no secret.
    recall = [m["content"] for r in requests for m in r["messages"] if m["role"] == "system"]
    assert any(KEPT.split("that ", 1)[1] in text for text in recall), "recall ran, so the check below means something"
    seen["upstream: recall"] = "\n".join(recall)
    seen["upstream: follow-up"] = orjson.dumps(requests[-1]).decode()
    seen["log"] = log.getvalue()
    return seen


# Each example starts an app and an upstream (about a second): few examples, each with several
# cases; shrinking a failure is bounded so that a failing run still ends in minutes.
@pytest.fixture(scope="module", autouse=True)
def service_logging() -> Iterator[None]:
    """The logging ``python -m app`` configures, at DEBUG (the most it ever writes)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    ours = logging.getLogger(LOGGER_NAME)
    ours_level = ours.level
    configure_logging(json_lines=True, level="DEBUG")
    yield
    flush_logs()
    root.handlers[:] = handlers
    root.setLevel(level)
    ours.setLevel(ours_level)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(
    cases=st.lists(message_with_secret(), min_size=3, max_size=5), policy=st.sampled_from(["strict", "capture_only"])
)
def test_no_secret_reaches_a_store_a_file_a_log_a_metric_an_export_or_the_upstream(
    cases: list[tuple[str, str, str]], policy: str
) -> None:
    seen = asyncio.run(_exercise(cases, policy, io.StringIO()))
    assert seen["log"].count("\n") > 4 * len(cases)  # the access lines at least: the log was captured
    for place, text in seen.items():
        lowered = text.lower()
        for _, secret, kind in cases:
            # lower-cased too: the full-text index keeps words folded
            assert secret not in text and secret.lower() not in lowered, (kind, place, secret)


async def _plain(sentences: list[str]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as name:
        app = create_app(
            build_settings(Path(name), memory_enabled=True, memory_capture_enabled=True, memory_write_policy="strict")
        )
        async with running(app) as client:
            return [
                (await client.post("/v1/memory", json={"content": f"remember that {s}, for later"})).json()
                for s in sentences
            ]


def test_plain_sentences_about_secrets_are_stored_whole() -> None:
    stored = asyncio.run(_plain(PLAIN_SENTENCES))
    for sentence, memory in zip(PLAIN_SENTENCES, stored, strict=True):
        assert (memory.get("memory") or {}).get("content") == f"{sentence}, for later", (sentence, memory)


async def _stored_by_an_older_gate(content: str) -> tuple[str, str, list[dict[str, Any]]]:
    with tempfile.TemporaryDirectory() as name:
        async with fake_upstream() as upstream:
            app = create_app(
                build_settings(
                    Path(name),
                    llm_enabled=True,
                    llm_provider="openai",
                    openai_base_url=upstream.url,
                    memory_enabled=True,
                    memory_capture_enabled=True,
                    memory_recall_enabled=True,
                    memory_write_policy="strict",
                )
            )
            async with running(app) as client:
                state: AppState = app.state.orch
                assert state.memory.store is not None
                # a row as a gate with fewer patterns stored it: written to the store directly
                await state.memory.store.capture(
                    owner=owner_hash(OWNER_ID),
                    conversation_id=None,
                    content=content,
                    digest=content_hash(content),
                    ttl_minutes=60,
                    source="api",
                )
                listed = (await client.get("/v1/memory")).text
                one = (await client.get(f"/v1/memory/{(await client.get('/v1/memory')).json()['data'][0]['id']}")).text
                chat = await client.post(
                    CHAT, json={"messages": [{"role": "user", "content": "what is the deploy db?"}]}
                )
                assert chat.status_code == 200, chat.text
            return listed, one, upstream.requests


def test_a_secret_stored_before_the_scrubber_knew_it_is_not_shown_or_recalled() -> None:
    content = "the deploy db is postgres://app:Hunter2Xyz99@db.internal/app and DB_PASSWORD=Hunter2Xyz99"
    listed, one, requests = asyncio.run(_stored_by_an_older_gate(content))
    recall = [m["content"] for r in requests for m in r["messages"] if m["role"] == "system"]
    assert any("postgres://app:[REDACTED]@db.internal/app" in text for text in recall)  # recalled, scrubbed
    for text in (listed, one, *recall):
        assert "Hunter2Xyz99" not in text and "DB_PASSWORD=[REDACTED]" in text
