"""A caller who leaves while its request is the breaker's half-open probe frees the probe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import FastAPI

from tests.api.test_disconnect_api import ASK, serve_once, settings, until
from tests.conftest import running
from tests.fakes.upstream import Reply, fake_upstream


async def test_a_probe_whose_caller_leaves_lets_the_next_probe_through(app_factory: Callable[..., FastAPI]) -> None:
    async with fake_upstream(Reply(status=500), Reply(delay=60), Reply()) as fake:
        app = app_factory(**settings(fake), llm_circuit_max_failures=1, llm_circuit_reset_sec=0.2)
        async with running(app) as client:
            assert (await client.post("/v1/chat/completions", json={"messages": ASK})).status_code == 502  # opens
            await asyncio.sleep(0.3)
            leave = asyncio.Event()
            served = asyncio.create_task(serve_once(app, "/v1/chat/completions", {"messages": ASK}, leave))
            await until(lambda: len(fake.requests) == 2)  # the probe is in flight
            await asyncio.sleep(0.3)
            leave.set()
            await asyncio.wait_for(served, 5)
            answer = await client.post("/v1/chat/completions", json={"messages": ASK})
            assert answer.status_code == 200, answer.text
