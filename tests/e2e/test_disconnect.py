"""A client that goes away mid-stream stops the upstream's generation promptly."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import E2E_TOKEN, LiveServer
from tests.fakes.upstream import Reply, fake_upstream

pytestmark = pytest.mark.e2e


async def test_client_disconnect_closes_the_upstream_connection_within_a_second(tmp_path: Path) -> None:
    async with fake_upstream(Reply(endless=True, delay=0.05)) as fake:
        env = {
            "ORCH_LLM_ENABLED": "1",
            "ORCH_LLM_PROVIDER": "openai",
            "ORCH_OPENAI_BASE_URL": fake.url,
            "ORCH_LLM_MAX_OUTPUT_CHARS": "0",
        }
        server = LiveServer(tmp_path, env)
        await asyncio.to_thread(server.start)
        try:
            async with httpx.AsyncClient(
                base_url=server.url, headers={"Authorization": f"Bearer {E2E_TOKEN}"}
            ) as client:
                body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "go on"}]}
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    assert response.status_code == 200
                    received = 0
                    async for _ in response.aiter_bytes():
                        received += 1
                        if received >= 3:
                            break
                closed_at = time.monotonic()
            while fake.disconnected_at is None and time.monotonic() - closed_at < 3:
                await asyncio.sleep(0.02)
            assert fake.disconnected_at is not None, "the upstream never saw the connection close"
            assert fake.disconnected_at - closed_at < 1.0
            async with httpx.AsyncClient(base_url=server.url) as probe:
                assert (await probe.get("/health")).status_code == 200
        finally:
            await asyncio.to_thread(server.stop)
