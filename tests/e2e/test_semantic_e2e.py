"""The semantic tier on the real server (uvicorn, the local embedding model): messages are routed
by meaning while ``/health`` keeps answering (the forward pass runs off the event loop)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.server import E2E_TOKEN, LiveServer

pytestmark = pytest.mark.e2e

HEALTH_BOUND = 5.0  # seconds; generous: /health answers in about a millisecond
# A request with a long text after it: routed by its first sentence, the text is not embedded.
LONG = "Please give me a short summary of this report. " + "The quarterly numbers went up again. " * 120


@pytest.fixture(scope="module")
def semantic_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "ORCH_ORCHESTRATOR_MODE": "advanced",
        "ORCH_SEMANTIC_ROUTER_ENABLED": "1",
        "ORCH_RATE_LIMIT": "10000 per minute",
    }
    with LiveServer(tmp_path_factory.mktemp("semantic"), env) as server:
        yield server


def post(server: LiveServer, text: str) -> dict[str, Any]:
    body = {"model": "orchestrators-demo", "messages": [{"role": "user", "content": text}]}
    headers = {"Authorization": f"Bearer {E2E_TOKEN}"}
    with httpx.Client(timeout=60) as client:
        response = client.post(server.url + "/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_a_paraphrase_is_routed_by_meaning(semantic_server: LiveServer) -> None:
    route = post(semantic_server, "count the words in the following text")["route_decision"]
    assert route["tier"] == "semantic" and route["tool"] == "text_stats" and route["action"] == "offered"
    assert post(semantic_server, "What is the capital of France?")["route_decision"]["tool"] is None


def test_long_messages_are_routed_by_their_request_while_health_answers(semantic_server: LiveServer) -> None:
    pool = ThreadPoolExecutor(max_workers=4)
    health: list[float] = []
    try:
        futures = [pool.submit(post, semantic_server, LONG) for _ in range(24)]
        with httpx.Client(timeout=HEALTH_BOUND) as probe:
            while True:  # at least one probe, right after the messages went out
                started = time.monotonic()
                assert probe.get(semantic_server.url + "/health").status_code == 200
                health.append(time.monotonic() - started)
                if all(future.done() for future in futures):
                    break
        routes = [future.result()["route_decision"] for future in futures]
    finally:
        pool.shutdown(cancel_futures=True)
    assert all(route["tool"] == "summarize_text" and route["tier"] == "semantic" for route in routes)
    assert len(health) >= 1 and max(health) < HEALTH_BOUND
