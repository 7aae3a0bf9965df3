"""A bearer token sent as X-Request-ID is never taken as the request id (echoed, logged, in receipts)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from tests.conftest import TOKEN, running


async def test_a_token_is_not_echoed_as_the_request_id(app_factory: Callable[..., FastAPI]) -> None:
    approver_token = "test-approver-token-0123456789"
    async with running(app_factory(approver_token=approver_token)) as client:
        plain = await client.get("/v1/models", headers={"X-Request-ID": "caller-id-1"})
        assert plain.headers["x-request-id"] == "caller-id-1"
        for token in (TOKEN, approver_token):
            response = await client.get("/v1/models", headers={"X-Request-ID": token})
            assert response.status_code == 200
            assert response.headers["x-request-id"] not in (token, "")
