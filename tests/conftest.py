"""Shared fixtures: every test builds its own app from a Settings object and its own temp files."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings

TOKEN = "test-owner-token-0123456789"


def build_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for one test: no .env file, files under tmp_path, a known owner token."""
    values: dict[str, Any] = {
        "bearer_token": TOKEN,
        "dev_token_path": tmp_path / "dev-token",
        "rate_limit": "1000 per minute",
        "log_json": True,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def running(app: FastAPI, *, token: str | None = TOKEN) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and give an httpx client talking to it in-process."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers) as client:
            yield client


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return build_settings(tmp_path, **overrides)

    return make


@pytest.fixture
def app_factory(settings_factory: Callable[..., Settings]) -> Callable[..., FastAPI]:
    def make(**overrides: Any) -> FastAPI:
        return create_app(settings_factory(**overrides))

    return make


@pytest.fixture
async def client(app_factory: Callable[..., FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app_factory()) as c:
        yield c


def assert_envelope(
    response: httpx.Response, status: int, *, type_: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The response is the OpenAI error envelope with this status; returns the error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if type_ is not None:
        assert body["error"]["type"] == type_, body
    if param is not None:
        assert body["error"]["param"] == param, body
    assert "x-request-id" in response.headers
    error: dict[str, Any] = body["error"]
    return error
