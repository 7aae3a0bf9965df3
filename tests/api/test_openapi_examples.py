"""The playground's default bodies are real requests: every request body in the OpenAPI schema
has an example, and each example, sent as-is, is accepted."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from tests.conftest import running

APPROVER = "test-approver-token-0123456789"
# Approving, denying and resolving review items are the approver's routes; the rest the caller's.
APPROVER_PATHS = re.compile(r"^/v1/(tools/approve$|tools/approvals/|review/)")
# Ids a path names: a real agent; approval and review ids that do not exist (404, not 400).
PATH_VALUES = {"name": "holly", "approval_id": "no-such-approval", "item_id": "no-such-item"}
# A body that names a receipt: the example's id is well formed and unknown here.
NAMES_AN_ID = {"/v1/audit/verify"}


def documented_bodies(schema: dict[str, Any]) -> list[tuple[str, str, Any]]:
    bodies = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody")
            if body is not None:
                bodies.append((method, path, body["content"]["application/json"].get("example")))
    return bodies


async def test_every_documented_request_example_is_accepted_as_is(app_factory: Callable[..., FastAPI]) -> None:
    # Every feature a documented route needs: the approver, memory, the review queue (advanced mode).
    app = app_factory(approver_token=APPROVER, memory_enabled=True, orchestrator_mode="advanced")
    async with running(app) as client:
        schema = (await client.get("/openapi.json")).json()
        bodies = documented_bodies(schema)
        assert len(bodies) >= 10
        missing = [f"{method.upper()} {path}" for method, path, example in bodies if example is None]
        assert not missing, f"request bodies without an example: {missing}"
        for method, path, example in bodies:
            url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
            headers = {"Authorization": f"Bearer {APPROVER}"} if APPROVER_PATHS.match(path) else {}
            response = await client.request(method.upper(), url, json=example, headers=headers)
            allowed = {200, 201} if url == path and path not in NAMES_AN_ID else {200, 201, 404}
            assert response.status_code in allowed, (method, path, example, response.text)
            if path == "/v1/tools/execute":
                assert response.json()["result"]["status"] == "ok", response.text


async def test_the_chat_example_is_a_real_conversation(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory()) as client:
        schema = (await client.get("/openapi.json")).json()
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    messages = body["example"]["messages"]
    assert messages[-1]["role"] == "user" and isinstance(messages[-1]["content"], str) and messages[-1]["content"]
    assert "additionalProp1" not in str(schema["paths"])


async def test_the_docs_pages_name_no_address_outside_the_service(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory(), token=None) as client:  # no token: a browser before Authorize
        for page in ("/docs", "/redoc"):
            response = await client.get(page)
            assert response.status_code == 200
            assert re.findall(r"https?://", response.text) == [], page
            assert "default-src 'self'" in response.headers["content-security-policy"]
            for asset in re.findall(r'(?:href|src)="(/[^"]+)"', response.text):
                served = await client.get(asset)
                assert served.status_code == 200 and len(served.content) > 1000, asset
