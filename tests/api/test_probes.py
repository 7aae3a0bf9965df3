"""/health, /ready and /metrics: no auth on probes, the API switch, metrics labels."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import FastAPI

from tests.conftest import assert_envelope, running


async def test_health_needs_no_token_and_is_never_rate_limited(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory(rate_limit="1 per minute"), token=None) as client:
        for _ in range(5):
            response = await client.get("/health")
            assert response.status_code == 200
            assert response.json() == {"status": "ok", "service": "orchestrators_v2"}
            assert "x-ratelimit-limit" not in response.headers
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        for path in ("/health", "/ready"):  # probes that use HEAD
            assert (await client.head(path)).status_code == 200
        # the API description is public too (the playground loads it before a token is pasted)
        for path in ("/openapi.json", "/docs"):
            assert (await client.get(path)).status_code == 200
        assert_envelope(await client.get("/v1/models"), 401)


async def test_api_switch_off_gives_503_on_v1_and_ready_but_health_stays_up(
    app_factory: Callable[..., FastAPI],
) -> None:
    async with running(app_factory(enable_api=False)) as client:
        assert (await client.get("/health")).status_code == 200
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json() == {"status": "disabled", "service": "orchestrators_v2", "reason": "api_disabled"}
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
            response = await client.request(method, path, json={"messages": [{"role": "user", "content": "x"}]})
            error = assert_envelope(response, 503, type_="service_unavailable")
            assert "ORCH_ENABLE_API" in error["message"]


async def test_metrics_need_the_bearer(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory(), token=None) as client:
        response = await client.get("/metrics")
        assert_envelope(response, 401, type_="authentication_error")
        assert response.headers["www-authenticate"] == "Bearer"


async def test_metrics_disabled_is_503(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory(metrics_enabled=False)) as client:
        assert_envelope(await client.get("/metrics"), 503, type_="service_unavailable")


async def test_metrics_use_route_templates_and_skip_probes(client) -> None:  # type: ignore[no-untyped-def]
    await client.get("/health")
    await client.get("/ready")
    for model in ("a-random-model-1", "another-model-2"):
        await client.get(f"/v1/models/{model}")
    await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    await client.get("/no/such/route/zq-unmatched-path")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'orch_requests_total{method="GET",route="/v1/models/{model_id:path}",status="404"} 2.0' in text
    assert 'orch_requests_total{method="POST",route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'route="<unmatched>"' in text
    assert "orch_request_latency_seconds_bucket" in text
    assert "orch_errors_total" in text
    # bounded labels: no raw path, and probes are not counted
    assert "a-random-model-1" not in text and "zq-unmatched-path" not in text
    assert not re.search(r'route="/(health|ready|metrics)"', text)
    assert "process_resident_memory_bytes" in text


async def test_metrics_labels_stay_bounded_and_name_the_description_pages(
    app_factory: Callable[..., FastAPI],
) -> None:
    async with running(app_factory()) as client:
        for method in ("PROPFIND", "MKCOL", "X1Y", "BREW"):
            assert (await client.request(method, "/v1/models")).status_code == 405
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert (await client.get(path)).status_code == 200
        page = (await client.get("/metrics")).text
    methods = set(re.findall(r'orch_requests_total\{[^}]*method="([^"]+)"', page))
    assert methods == {"GET", "OTHER"}
    assert re.search(r'orch_requests_total\{[^}]*method="OTHER"[^}]*\} 4\.0', page)
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert f'route="{path}"' in page
    assert 'route="<unmatched>"' not in page


async def test_the_approver_token_cannot_read_metrics(app_factory: Callable[..., FastAPI]) -> None:
    approver = "approver-token-0123456789abcdef"
    async with running(app_factory(approver_token=approver)) as client:
        assert (await client.get("/metrics")).status_code == 200
        refused = await client.get("/metrics", headers={"Authorization": f"Bearer {approver}"})
        error = assert_envelope(refused, 403)
        assert error["code"] == "approver_token_not_allowed"
        assert "/v1/review" in error["message"]
