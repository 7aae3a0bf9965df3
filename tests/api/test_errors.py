"""Every way a request can be wrong gets the right status and the OpenAI error envelope."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import assert_envelope, running

CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (b'{"messages": "\xff\xfe"}', None, "body is not valid UTF-8"),
        (b"", None, "empty"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b'"text"', None, "must be a JSON object"),
        (b"{}", "messages", "Field required"),
        (b'{"messages": "hello"}', "messages", "valid list"),
        (b'{"messages": []}', "messages", "at least 1"),
        (b'{"messages": ["hello"]}', "messages[0]", "valid dictionary"),
        (b'{"messages": [{"content": "hi"}]}', "messages[0].role", "Field required"),
        (b'{"messages": [{"role": "wizard", "content": "hi"}]}', "messages[0].role", "Input should be"),
        (b'{"messages": [{"role": "user", "content": 42}]}', "messages[0].content", None),
        (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes please"}', "stream", None),
        # strict, as OpenAI is: the body is forwarded as sent, so nothing is coerced
        (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream", "valid boolean"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "stream": 1}', "stream", "valid boolean"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "10"}', "max_tokens", "valid integer"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "0.5"}', "temperature", "valid number"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": "true"}}',
            "stream_options.include_usage",
            "valid boolean",
        ),
        (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 9}', "temperature", None),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}', "max_tokens", None),
        # forwarded as sent before: a model server parses it into a 32-bit integer
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9223372036854775808}', "max_tokens", None),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 9223372036854775807}',
            "max_completion_tokens",
            "less than or equal to 1048576",
        ),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1048577}', "max_tokens", None),
        (b'{"messages": [{"role": "user", "content": "hi"}], "model": 12}', "model", None),
    ],
)
async def test_bad_chat_bodies_get_400_naming_the_field(
    client: httpx.AsyncClient, body: bytes, param: str | None, fragment: str | None
) -> None:
    response = await client.post(CHAT, content=body, headers={"content-type": "application/json"})
    error = assert_envelope(response, 400, type_="invalid_request_error", param=param)
    if fragment:
        assert fragment in error["message"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_a_compressed_body_gets_415_naming_the_encoding(client: httpx.AsyncClient, encoding: str) -> None:
    body = gzip.compress(b'{"messages": [{"role": "user", "content": "hi"}]}')
    headers = {"content-type": "application/json", "content-encoding": encoding}
    response = await client.post(CHAT, content=body, headers=headers)
    error = assert_envelope(response, 415, type_="invalid_request_error")
    assert error["code"] == "unsupported_content_encoding" and encoding in error["message"]


async def test_the_largest_output_budget_is_accepted(client: httpx.AsyncClient) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1_048_576, "max_completion_tokens": 1}
    assert (await client.post(CHAT, json=body)).status_code == 200


@pytest.mark.parametrize("encoding", ["gzip", "GZIP ", "deflate", "br", "zstd", "identity, gzip", "x-anything"])
@pytest.mark.parametrize("path", [CHAT, "/echo", "/v1/memory"])
async def test_an_encoding_on_a_plain_body_gets_415_all_the_same(
    app_factory: Callable[..., FastAPI], encoding: str, path: str
) -> None:
    """The body is plain JSON the service could read; the header says it is not, so it is refused."""
    async with running(app_factory(memory_enabled=True)) as client:
        body = b'{"messages": [{"role": "user", "content": "hi"}], "content": "remember that x is 1"}'
        headers = {"content-type": "application/json", "content-encoding": encoding}
        error = assert_envelope(await client.post(path, content=body, headers=headers), 415)
        assert error["code"] == "unsupported_content_encoding" and encoding.strip() in error["message"]
        assert (await client.get("/v1/memory")).json()["data"] == []  # nothing was stored


@pytest.mark.parametrize("encoding", ["identity", "Identity", ""])
async def test_identity_is_no_encoding(client: httpx.AsyncClient, encoding: str) -> None:
    body = b'{"messages": [{"role": "user", "content": "hi"}]}'
    headers = {"content-type": "application/json", "content-encoding": encoding}
    assert (await client.post(CHAT, content=body, headers=headers)).status_code == 200


async def test_a_trailing_slash_on_models_is_an_unknown_route(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory()) as client:
        error = assert_envelope(await client.get("/v1/models/"), 404, type_="not_found_error")
        assert error["code"] == "unknown_route"
        assert (await client.get("/v1/models/orchestrators-demo")).status_code == 200
    async with running(app_factory(), token=None) as anonymous:  # as every unknown route: 404 before auth
        assert assert_envelope(await anonymous.get("/v1/models/"), 404)["code"] == "unknown_route"
        assert (await anonymous.get("/v1/models/orchestrators-demo")).status_code == 401


async def test_bad_echo_bodies_get_400(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.post("/echo", content=b"{oops"), 400)
    assert_envelope(await client.post("/echo", json={"message": 5}), 400, param="message")
    assert_envelope(await client.post("/echo", json=["message"]), 400)


async def test_unknown_route_is_404_envelope(client: httpx.AsyncClient) -> None:
    error = assert_envelope(await client.get("/v1/nothing-here"), 404, type_="not_found_error")
    assert error["code"] == "unknown_route"


async def test_wrong_method_is_405_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get(CHAT)
    assert_envelope(response, 405, type_="invalid_request_error")
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/memory", "DELETE, GET, POST"),
        ("/v1/memory/00000000-0000-0000-0000-000000000000", "DELETE, GET"),
        ("/v1/agents/holly/chat", "POST"),
    ],
)
async def test_a_405_allows_every_method_the_path_takes(
    app_factory: Callable[..., FastAPI], path: str, allow: str
) -> None:
    # Each method of a path is its own route: the header named only the first one (GET).
    async with running(app_factory(memory_enabled=True)) as client:
        response = await client.put(path)
    assert_envelope(response, 405, type_="invalid_request_error")
    assert response.headers["allow"] == allow


async def test_body_over_the_limit_is_413_by_content_length(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory(max_request_bytes=200)) as client:
        big = {"messages": [{"role": "user", "content": "x" * 500}]}
        error = assert_envelope(await client.post(CHAT, json=big), 413)
        assert "ORCH_MAX_REQUEST_BYTES" in error["message"]
        small = {"messages": [{"role": "user", "content": "x"}]}
        assert (await client.post(CHAT, json=small)).status_code == 200


async def test_chunked_body_over_the_limit_is_413_on_bytes_read(app_factory: Callable[..., FastAPI]) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"y" * 50
        yield b'"}]}'

    for path in (CHAT, "/echo"):
        async with running(app_factory(max_request_bytes=300)) as client:
            request = client.build_request("POST", path, content=chunks(), headers={"content-type": "application/json"})
            assert "content-length" not in request.headers
            assert_envelope(await client.send(request), 413)


async def test_unexpected_failure_is_500_without_internals(app_factory: Callable[..., FastAPI]) -> None:
    app = app_factory()

    async def explode() -> dict[str, Any]:
        raise RuntimeError("secret internal detail /etc/passwd")

    app.add_api_route("/boom", explode)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/boom")
    error = assert_envelope(response, 500, type_="server_error")
    assert "secret" not in response.text and "Traceback" not in response.text
    assert error["code"] == "internal_error"


async def test_request_id_is_echoed_when_sane_and_replaced_when_not(client: httpx.AsyncClient) -> None:
    sane = "req-123.abc:XYZ_9"
    response = await client.post("/echo", json={}, headers={"X-Request-ID": sane})
    assert response.headers["x-request-id"] == sane
    credential = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"  # sane characters, but a credential: never logged
    own_token = client.headers["authorization"].removeprefix("Bearer ")  # ours, though not credential-shaped
    for bad in ("x" * 129, "has space", "semi;colon", "<script>", credential, "AKIAABCDEFGHIJKLMNOP", own_token):
        response = await client.post("/echo", json={}, headers={"X-Request-ID": bad})
        generated = response.headers["x-request-id"]
        assert generated != bad and len(generated) == 32
    # errors carry it too
    response = await client.get("/nope", headers={"X-Request-ID": sane})
    assert response.status_code == 404 and response.headers["x-request-id"] == sane


async def test_the_api_docs_describe_errors_as_they_are_sent(client: httpx.AsyncClient) -> None:
    """400 with the OpenAI error envelope, not FastAPI's 422 validation body; 401 where a token is needed."""
    schema = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    envelope = schema["components"]["schemas"]["ErrorEnvelope"]
    assert envelope["required"] == ["error"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (path, method)
            for status, response in responses.items():
                if not status.startswith("2"):
                    assert response["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorEnvelope")
            assert ("401" in responses) == (path not in ("/health", "/ready")), (path, method)
    assert "400" in schema["paths"]["/v1/trust/events"]["get"]["responses"]


async def test_the_api_docs_list_every_status_a_route_answers(client: httpx.AsyncClient) -> None:
    """A schema-driven client (or fuzzer) must not meet a status the schema does not list: the
    403 of the other credential, 429, 503 on every route behind the bearer; 413/415 where a body is
    read; 404 for a path id; 409 where a decision may already have been taken; and an agent chat
    may stream."""
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = set(operation["responses"])
            if path not in ("/health", "/ready"):
                assert {"403", "429", "503"} <= responses, (path, method)
            if "requestBody" in operation:
                assert {"413", "415"} <= responses, (path, method)
            if "{" in path:
                assert "404" in responses, (path, method)
    for path in ("/v1/tools/approvals/{approval_id}/approve", "/v1/tools/approvals/{approval_id}/deny"):
        assert "409" in paths[path]["post"]["responses"]
    assert "409" in paths["/v1/review/{item_id}/resolve"]["post"]["responses"]
    for path, method in [
        ("/v1/tools/execute", "post"),
        ("/v1/tools/approve", "post"),
        ("/v1/audit/verify", "post"),
        ("/v1/trust/ledger", "get"),
        ("/v1/chat/completions", "post"),
    ]:
        assert "404" in paths[path][method]["responses"], path
    agent_chat = paths["/v1/agents/{name}/chat"]["post"]["responses"]
    assert "text/event-stream" in agent_chat["200"]["content"]
    assert paths["/echo"]["post"]["requestBody"]["required"] is False  # an empty body echoes ""


async def abandoned_request(app: FastAPI, path: str, authorization: str) -> list[dict[str, Any]]:
    """POST ``path`` announcing 100 bytes, send 14, then go away; what the app sent back."""
    messages = [{"type": "http.request", "body": b'{"messages": [', "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", authorization.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"100"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def test_a_client_that_leaves_mid_body_is_not_a_server_error(
    app_factory: Callable[..., FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    """The body is cut off by the client going away: nothing to answer, recorded as 499, no error logged."""
    app = app_factory()
    async with running(app) as client:
        for path in (CHAT, "/echo"):
            sent = await abandoned_request(app, path, client.headers["authorization"])
            assert not any(m.get("status") == 500 for m in sent), sent
        metrics = (await client.get("/metrics")).text
    assert 'status="499"' in metrics and "orch_errors_total{" not in metrics
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_a_made_up_key_is_not_echoed_whole(app_factory: Callable[..., FastAPI]) -> None:
    """An unknown field or tool argument named by an 800 kB key: the error names it shortened (it
    came back whole twice, in `message` and `param`: a 1.6 MB error body)."""
    key = "k" * 800_000
    async with running(app_factory(memory_enabled=True)) as client:
        for path, body in [
            ("/v1/memory", {"content": "a perfectly fine memory", key: 1}),
            ("/v1/tools/execute", {"name": "echo", "args": {"message": "hi", key: 1}}),
            ("/v1/tools/execute", {"name": "echo", key: 1}),
        ]:
            response = await client.post(path, json=body)
            error = assert_envelope(response, 400)
            assert len(response.content) < 2_000, (path, len(response.content))
            assert error["param"].startswith(("kkk", "args.kkk")) and error["param"].endswith("...[truncated]")
