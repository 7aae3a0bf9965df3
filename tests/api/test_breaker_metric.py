"""orch_upstream_circuit_open follows the provider's circuit breaker (what the Prometheus alert
OrchestratorsCircuitOpen in deploy/observability reads), against a real failing local upstream."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from fastapi import FastAPI

from tests.conftest import running
from tests.fakes.upstream import Reply, completion, fake_upstream

CHAT = "/v1/chat/completions"
HELLO = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def gauge(text: str) -> float:
    found = re.search(r"^orch_upstream_circuit_open (\S+)$", text, re.M)
    assert found, text[-2000:]
    return float(found.group(1))


async def test_the_gauge_is_1_while_the_breaker_is_open(app_factory: Callable[..., FastAPI]) -> None:
    replies = (Reply(status=500), Reply(body=completion("recovered")))
    async with fake_upstream(*replies) as fake:
        app = app_factory(
            llm_enabled=True,
            llm_provider="openai",
            openai_base_url=fake.url,
            llm_timeout_sec=5,
            llm_retry_count=0,
            llm_circuit_max_failures=1,
            llm_circuit_reset_sec=0.5,
        )
        async with running(app) as client:
            assert gauge((await client.get("/metrics")).text) == 0
            assert (await client.post(CHAT, json=HELLO)).status_code == 502
            assert gauge((await client.get("/metrics")).text) == 1
            await asyncio.sleep(0.6)
            assert (await client.post(CHAT, json=HELLO)).status_code == 200  # the probe closes it
            assert gauge((await client.get("/metrics")).text) == 0


async def test_the_demo_provider_exports_it_as_0(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory()) as client:
        assert gauge((await client.get("/metrics")).text) == 0
