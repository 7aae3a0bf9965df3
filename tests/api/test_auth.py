"""Bearer auth: 401 envelope with WWW-Authenticate, principals, the development token."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI

from app.lifespan import StartupError
from app.main import create_app
from tests.conftest import TOKEN, assert_envelope, build_settings, running


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dGVzdDp0ZXN0",
        f"Token {TOKEN}",
        "Bearer wrong-token",
        f"Bearer {TOKEN}x",
    ],
)
async def test_protected_routes_reject_missing_or_wrong_tokens(
    app_factory: Callable[..., FastAPI], authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with running(app_factory(), token=None) as client:
        for method, path in (
            ("POST", "/echo"),
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/metrics"),
        ):
            response = await client.request(method, path, headers=headers, json={"messages": []})
            assert_envelope(response, 401, type_="authentication_error")
            assert response.headers["www-authenticate"] == "Bearer"


async def test_valid_token_passes_and_scheme_is_case_insensitive(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.post("/echo", json={"message": "hi"}, headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.json() == {"echo": "hi"}


async def test_auth_off_lets_anonymous_callers_in(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory(require_bearer=False), token=None) as client:
        response = await client.post("/echo", json={"message": "open"})
        assert response.status_code == 200


async def test_extra_principals_authenticate_with_their_own_tokens(
    app_factory: Callable[..., FastAPI],
) -> None:
    app = app_factory(principals="alice=alice-token-123456,bob=bob-token-1234567")
    async with running(app, token=None) as client:
        for token in ("alice-token-123456", "bob-token-1234567", TOKEN):
            response = await client.post("/echo", json={}, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, token
        response = await client.post("/echo", json={}, headers={"Authorization": "Bearer alice"})
        assert response.status_code == 401


async def test_development_token_is_generated_once_and_kept_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = build_settings(tmp_path, bearer_token="", dev_token_path=tmp_path / "inst" / "dev-token")
    async with running(create_app(settings), token=None) as client:
        token = (tmp_path / "inst" / "dev-token").read_text().strip()
        assert token.startswith("orch-dev-") and len(token) > 30
        assert stat.S_IMODE((tmp_path / "inst" / "dev-token").stat().st_mode) == 0o600
        assert f"Authorization: Bearer {token}" in capsys.readouterr().err
        assert (await client.post("/echo", json={})).status_code == 401
        ok = await client.post("/echo", json={}, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    # a restart (or a second worker) reuses the same token
    async with running(create_app(settings), token=token) as client:
        assert (await client.post("/echo", json={})).status_code == 200


async def test_an_empty_development_token_file_left_by_a_crash_is_replaced(tmp_path: Path) -> None:
    """A writer that died between creating the file and writing it left it empty: the next start
    makes a token instead of failing on the file for ever."""
    path = tmp_path / "dev-token"
    path.write_text("")
    settings = build_settings(tmp_path, bearer_token="", dev_token_path=path)
    async with running(create_app(settings), token=None) as client:
        token = path.read_text().strip()
        assert token.startswith("orch-dev-")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        ok = await client.post("/echo", json={}, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200


# A directory, a path below a regular file, a parent that cannot be created (as root, too).
@pytest.mark.parametrize("where", ["a-directory", "file/below-a-file", "/proc/nonexist/dev-token"])
async def test_a_development_token_path_that_cannot_hold_the_token_stops_startup_naming_the_flag(
    tmp_path: Path, where: str
) -> None:
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "file").write_text("not a directory\n")
    path = tmp_path / where  # an absolute `where` stays as it is
    settings = build_settings(tmp_path, bearer_token="", dev_token_path=path)
    with pytest.raises(StartupError) as caught:
        async with running(create_app(settings), token=None):
            pass
    message = str(caught.value)
    assert f"ORCH_DEV_TOKEN_PATH={str(path)!r}" in message and "\n" not in message
