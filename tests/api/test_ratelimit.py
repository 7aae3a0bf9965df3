"""Rate limiting: 429 envelope with Retry-After and x-ratelimit-*, keyed by validated principal."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import TOKEN, assert_envelope, running

REDIS_URL = "redis://127.0.0.1:6379/0"


async def test_fourth_call_is_429_with_headers(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory(rate_limit="3 per minute")) as client:
        for remaining in (2, 1, 0):
            response = await client.post("/echo", json={})
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit"] == "3"
            assert response.headers["x-ratelimit-remaining"] == str(remaining)
        response = await client.post("/echo", json={})
        error = assert_envelope(response, 429, type_="rate_limit_error")
        assert error["code"] == "rate_limit_exceeded"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.headers["x-ratelimit-remaining"] == "0"
        # probes are never limited
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).status_code == 200


async def test_random_bearer_strings_do_not_buy_fresh_buckets(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory(rate_limit="3 per minute"), token=None) as client:
        statuses = [
            (await client.post("/echo", json={}, headers={"Authorization": f"Bearer fake-{uuid.uuid4()}"})).status_code
            for _ in range(5)
        ]
        # the first three are counted against the address and rejected as unauthenticated,
        # then the address is out of budget whatever token is invented
        assert statuses == [401, 401, 401, 429, 429]
        # a valid principal has its own bucket
        ok = await client.post("/echo", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200


async def test_principals_have_separate_buckets(app_factory: Callable[..., FastAPI]) -> None:
    app = app_factory(rate_limit="2 per minute", principals="alice=alice-token-123456")
    async with running(app) as client:
        for _ in range(2):
            assert (await client.post("/echo", json={})).status_code == 200
        assert (await client.post("/echo", json={})).status_code == 429
        alice = {"Authorization": "Bearer alice-token-123456"}
        assert (await client.post("/echo", json={}, headers=alice)).status_code == 200


async def test_redis_storage_shares_counters_across_replicas(app_factory: Callable[..., FastAPI]) -> None:
    # A principal name unique to this run, so earlier runs in the same minute do not interfere.
    name = "replica-test-" + uuid.uuid4().hex[:12]
    token = "token-" + uuid.uuid4().hex
    settings = {
        "rate_limit": "4 per minute",
        "rate_limit_storage_url": REDIS_URL,
        "principals": f"{name}={token}",
    }
    first, second = app_factory(**settings), app_factory(**settings)
    async with running(first, token=token) as a, running(second, token=token) as b:
        results = []
        for client in (a, b, a, b, a, b):
            results.append((await client.post("/echo", json={})).status_code)
        assert results == [200, 200, 200, 200, 429, 429]
        ready = await a.get("/ready")
        assert ready.json()["checks"]["rate_limit_storage"] == "ok"


async def test_unreachable_redis_fails_open_and_ready_says_why(app_factory: Callable[..., FastAPI]) -> None:
    """Requests go through; /ready lists the storage as unavailable but stays ready (a load balancer
    taking every replica out because Redis is down would take the API down after all)."""
    app = app_factory(rate_limit="1 per minute", rate_limit_storage_url="redis://127.0.0.1:1/0")
    async with running(app) as client:
        for _ in range(3):
            assert (await client.post("/echo", json={})).status_code == 200
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"]["rate_limit_storage"] == "rate_limit_storage_unavailable (failing open)"


async def test_a_redis_that_never_answers_does_not_slow_every_request(app_factory: Callable[..., FastAPI]) -> None:
    """A listener that accepts and then says nothing: the first request waits for the storage's
    bound, then the storage is left alone for a while and requests go straight through."""
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    app = app_factory(rate_limit="1 per minute", rate_limit_storage_url=f"redis://127.0.0.1:{port}/0")
    try:
        async with running(app) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            statuses = [(await client.post("/echo", json={})).status_code for _ in range(10)]
            elapsed = loop.time() - started
    finally:
        silent.close()
    assert statuses == [200] * 10
    assert elapsed < 3  # one wait of about half a second, not ten of several seconds


async def test_rate_limit_headers_on_chat(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert response.headers["x-ratelimit-limit"] == "1000"


async def test_every_forwarded_for_line_is_read(app_factory: Callable[..., FastAPI]) -> None:
    """A proxy that adds its own X-Forwarded-For line after the caller's: the caller's invented
    first line must not pick the bucket."""
    app = app_factory(rate_limit="3 per minute", trusted_proxies="127.0.0.1")
    async with running(app, token=None) as client:
        statuses = []
        for n in range(5):
            headers = [("X-Forwarded-For", f"7.7.8.{n}"), ("X-Forwarded-For", "10.3.3.3")]
            statuses.append((await client.post("/echo", json={}, headers=headers)).status_code)
        assert statuses == [401, 401, 401, 429, 429]  # all keyed to 10.3.3.3, the proxy's word
        other = await client.post("/echo", json={}, headers={"X-Forwarded-For": "10.4.4.4"})
        assert other.status_code == 401  # another client's bucket is untouched


async def test_failed_tokens_on_metrics_are_rate_limited_and_logged(
    app_factory: Callable[..., FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="orchestrators.access")
    async with running(app_factory(rate_limit="3 per minute"), token=None) as client:
        statuses = [
            (await client.get("/metrics", headers={"Authorization": f"Bearer guess-{n}"})).status_code for n in range(5)
        ]
        assert statuses == [401, 401, 401, 429, 429]
        scraper = {"Authorization": f"Bearer {TOKEN}"}
        # A valid scraper is not counted (its polling is not a caller's traffic).
        assert [(await client.get("/metrics", headers=scraper)).status_code for _ in range(5)] == [200] * 5
        page = (await client.get("/metrics", headers=scraper)).text
    refused = [r for r in caplog.records if r.name == "orchestrators.access" and r.__dict__["route"] == "/metrics"]
    assert [r.__dict__["status"] for r in refused] == [401, 401, 401, 429, 429]  # the 200s stay at DEBUG
    assert 'route="/metrics",status="429"' in page


async def test_a_rate_limited_request_is_logged_with_its_principal(
    app_factory: Callable[..., FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="orchestrators.access")
    async with running(app_factory(rate_limit="1 per minute")) as client:
        assert (await client.post("/echo", json={})).status_code == 200
        assert (await client.post("/echo", json={})).status_code == 429
    lines = [r.__dict__ for r in caplog.records if r.name == "orchestrators.access"]
    assert [(line["status"], line["principal"]) for line in lines] == [(200, "owner"), (429, "owner")]
