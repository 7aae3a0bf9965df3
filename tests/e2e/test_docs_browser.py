"""/docs and /redoc in a real headless browser with no way out: every request to anything but the
service on 127.0.0.1 is blocked, and the pages still render the operations, and Swagger UI's
*Authorize* and "Try it out" send an authenticated request that answers 200.

Debian's chromium (scripts/ensure_chromium.sh, part of `make test-deps`) driven by Playwright for
Python: Playwright's own browser download fetches from outside the package registries, which a
local-first machine may not reach. Missing either fails these tests; nothing is skipped.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from tests.e2e.server import E2E_TOKEN, LiveServer

pytestmark = pytest.mark.e2e

LOOPBACK = "127.0.0.1"
TIMEOUT_MS = 30_000  # generous: a cold chromium on a loaded 2-core machine


def chromium_path() -> str:
    path = shutil.which("chromium")
    assert path, "Debian's chromium is required for these tests: run scripts/ensure_chromium.sh (make test-deps)"
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service as a newcomer runs it: demo mode, default flags, a known token."""
    with LiveServer(tmp_path_factory.mktemp("docs")) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where chromium refuses its own sandbox.
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield launched
        launched.close()


class Offline:
    """A page whose every non-loopback request is aborted and recorded."""

    def __init__(self, browser: Browser) -> None:
        self.context = browser.new_context()
        self.blocked: list[str] = []
        self.sent: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers) to the service
        self.context.route("**/*", self._route)
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        # What the pages' Content-Security-Policy refused before any request was made.
        self.refused: list[str] = []
        self.page.on(
            "console", lambda message: self.refused.append(message.text) if "Content Security" in message.text else None
        )

    def _route(self, route: Route) -> None:
        request = route.request
        parts = urlsplit(request.url)
        if parts.scheme in {"http", "https"} and parts.hostname == LOOPBACK:
            self.sent.append((request.method, parts.path, request.headers))
            route.continue_()
            return
        if parts.scheme in {"data", "blob"}:  # in the page itself, nothing leaves
            route.continue_()
            return
        self.blocked.append(request.url)
        route.abort()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def offline(browser: Browser) -> Iterator[Offline]:
    page = Offline(browser)
    yield page
    page.close()


def test_swagger_ui_renders_offline_and_authorize_then_try_it_out_answers_200(
    server: LiveServer, offline: Offline
) -> None:
    page = offline.page
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/chat/completions" in [p.replace("\u200b", "") for p in paths], paths
    assert page.locator(".opblock").count() >= 20

    # Authorize: paste the token into the bearer scheme's dialog.
    page.locator("button.authorize").first.click()
    dialog = page.locator(".dialog-ux .modal-ux")
    dialog.locator("input").first.fill(E2E_TOKEN)
    dialog.locator("button.authorize").click()
    dialog.locator("button.btn-done, button.close-modal").first.click()

    # Try it out: the chat operation, with its documented example as the body, as it is shown.
    chat = page.locator(".opblock-post", has=page.locator(".opblock-summary-path[data-path='/v1/chat/completions']"))
    chat.locator(".opblock-summary").click()
    body = chat.locator("textarea.body-param__text")
    assert "In one sentence" in body.input_value()
    chat.locator("button.execute").click()
    status = chat.locator(".live-responses-table tr.response td.response-col_status").first
    status.wait_for()
    assert status.inner_text().strip().startswith("200"), status.inner_text()
    assert "[ORCHESTRATORS_V2 demo mode]" in chat.locator(".live-responses-table").inner_text()

    [sent] = [headers for method, path, headers in offline.sent if (method, path) == ("POST", "/v1/chat/completions")]
    assert sent["authorization"] == f"Bearer {E2E_TOKEN}"
    assert offline.blocked == [], f"requests that tried to leave the machine: {offline.blocked}"
    assert offline.refused == []


def test_redoc_renders_offline(server: LiveServer, offline: Offline) -> None:
    page = offline.page
    page.goto(server.url + "/redoc")
    page.wait_for_selector("[data-section-id*='operation/']", state="attached")
    operations = page.locator("[data-section-id*='operation/']").count()
    assert operations >= 20, operations
    assert page.get_by_text("/v1/chat/completions").count() >= 1
    assert offline.blocked == [], f"requests that tried to leave the machine: {offline.blocked}"
    # The one address ReDoc's bundle has baked in (its vendor's logo) is refused by the page itself.
    assert all("cdn.redoc.ly/redoc/logo-mini.svg" in line for line in offline.refused), offline.refused


def test_the_pages_assets_are_served_by_the_service(server: LiveServer, offline: Offline) -> None:
    offline.page.goto(server.url + "/docs")
    offline.page.wait_for_selector(".opblock")
    fetched = {path for _, path, _ in offline.sent}
    assert {"/docs", "/openapi.json", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= fetched
    assert Path(chromium_path()).exists()
