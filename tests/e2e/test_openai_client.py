"""The official `openai` client against the real service started with uvicorn."""

from __future__ import annotations

import httpx
import openai
import pytest

from app.providers.demo import DEMO_HEADER, DEMO_MODEL
from tests.e2e.server import E2E_TOKEN, LiveServer

pytestmark = pytest.mark.e2e


def client_for(server: LiveServer, token: str = E2E_TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=10)


def test_list_and_retrieve_models(live_server: LiveServer) -> None:
    client = client_for(live_server)
    models = client.models.list()
    assert [m.id for m in models.data] == [DEMO_MODEL]
    assert client.models.retrieve(DEMO_MODEL).id == DEMO_MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_chat_completion(live_server: LiveServer) -> None:
    completion = client_for(live_server).chat.completions.create(
        model=DEMO_MODEL, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content.startswith(DEMO_HEADER)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    extra = completion.model_extra or {}
    assert extra["request_id"]
    assert "memory_decision" in extra


def test_streamed_chat_collects_the_same_text(live_server: LiveServer) -> None:
    client = client_for(live_server)
    messages = [{"role": "user", "content": "Stream please"}]
    whole = client.chat.completions.create(model=DEMO_MODEL, messages=messages).choices[0].message.content
    stream = client.chat.completions.create(
        model=DEMO_MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    deltas, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(deltas) > 5
    assert "".join(deltas) == whole
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_error_classes(live_server: LiveServer) -> None:
    good = client_for(live_server)
    with pytest.raises(openai.AuthenticationError) as auth:
        client_for(live_server, token="wrong-token").models.list()
    assert auth.value.status_code == 401
    with pytest.raises(openai.BadRequestError) as bad:
        good.chat.completions.create(model=DEMO_MODEL, messages=[{"role": "wizard", "content": "x"}])  # type: ignore[misc,list-item]
    assert bad.value.body["param"] == "messages[0].role"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        good.get("/no-such-route", cast_to=httpx.Response)
    with pytest.raises(openai.APIStatusError) as too_big:
        good.chat.completions.create(model=DEMO_MODEL, messages=[{"role": "user", "content": "x" * 10_000}])
    assert too_big.value.status_code == 413


def test_rate_limit_error(tmp_path_factory: pytest.TempPathFactory) -> None:
    with LiveServer(tmp_path_factory.mktemp("rl"), {"ORCH_RATE_LIMIT": "2 per minute"}) as server:
        client = client_for(server)
        client.models.list()
        client.models.list()
        with pytest.raises(openai.RateLimitError) as limited:
            client.models.list()
        assert limited.value.status_code == 429
        assert int(limited.value.response.headers["retry-after"]) >= 1
