"""What the upstream returns arrives whole, through the real server (uvicorn) and the official
`openai` client: `logprobs`, `system_fingerprint`, the usage details, and `n` choices, whole and
streamed, from an OpenAI-compatible upstream (tests/fakes/upstream.py), from Ollama (its native API,
tests/fakes/ollama_front.py in front of the same fake, fanned out n times) and from the demo
provider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest

from app.providers.base import MAX_CHOICES
from app.providers.demo import DEMO_MODEL
from tests.e2e.server import E2E_TOKEN, LiveServer
from tests.fakes.ollama_front import serve
from tests.fakes.upstream import FakeUpstream, Reply, fake_upstream

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "Say hi"}]
FINGERPRINT = "fp_fake_0123"
PROMPT_DETAILS = {"cached_tokens": 3, "audio_tokens": 0}
COMPLETION_DETAILS = {"reasoning_tokens": 2, "audio_tokens": 0, "accepted_prediction_tokens": 0}


def entry(token: str, logprob: float) -> dict[str, Any]:
    """One token's logprobs as OpenAI sends them, with two alternatives."""
    alternatives = [
        {"token": token, "logprob": logprob, "bytes": list(token.encode())},
        {"token": token.upper(), "logprob": logprob - 1.5, "bytes": list(token.upper().encode())},
    ]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": alternatives}


def texts(n: int) -> list[list[str]]:
    return [[f"hi{index} ", "there"] for index in range(n)]


def whole_body(n: int) -> dict[str, Any]:
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": "".join(words)},
            "logprobs": {"content": [entry(word, -0.1 * (i + 1)) for i, word in enumerate(words)], "refusal": None},
            "finish_reason": "stop",
        }
        for index, words in enumerate(texts(n))
    ]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake-model",
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": 2 * n,
            "total_tokens": 7 + 2 * n,
            "prompt_tokens_details": PROMPT_DETAILS,
            "completion_tokens_details": COMPLETION_DETAILS,
        },
    }


def stream_events(n: int) -> list[dict[str, Any]]:
    """OpenAI's streamed shape for n choices: one choice per chunk, interleaved, each chunk with the
    fingerprint; then the usage chunk."""
    head = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": "fake-model"}
    head["system_fingerprint"] = FINGERPRINT
    events: list[dict[str, Any]] = []
    for index in range(n):
        events.append({**head, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""}}]})
    for position in range(2):
        for index, words in enumerate(texts(n)):
            word = words[position]
            choice = {
                "index": index,
                "delta": {"content": word},
                "logprobs": {"content": [entry(word, -0.1 * (position + 1))], "refusal": None},
                "finish_reason": None,
            }
            events.append({**head, "choices": [choice]})
    for index in range(n):
        events.append({**head, "choices": [{"index": index, "delta": {}, "finish_reason": "stop"}]})
    usage = whole_body(n)["usage"]
    events.append({**head, "choices": [], "usage": usage})
    return events


def client_for(server: LiveServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=E2E_TOKEN, max_retries=0, timeout=20)


@asynccontextmanager
async def live(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[LiveServer]:
    server = LiveServer(tmp_path, {"ORCH_LLM_ENABLED": "1", "ORCH_MODEL_CHAT": "fake-model", **env})
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


def expected_logprobs(words: list[str]) -> list[dict[str, Any]]:
    return [entry(word, -0.1 * (i + 1)) for i, word in enumerate(words)]


async def collect(stream: Any) -> tuple[dict[int, str], dict[int, list[dict[str, Any]]], dict[int, str], Any, set[Any]]:
    text: dict[int, str] = {}
    logprobs: dict[int, list[dict[str, Any]]] = {}
    finish: dict[int, str] = {}
    usage = None
    fingerprints = set()
    async for chunk in stream:
        fingerprints.add(chunk.system_fingerprint)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text[choice.index] = text.get(choice.index, "") + (choice.delta.content or "")
            if choice.logprobs is not None and choice.logprobs.content:
                logprobs.setdefault(choice.index, []).extend(e.model_dump() for e in choice.logprobs.content)
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    return text, logprobs, finish, usage, fingerprints


def assert_request_carried(fake: FakeUpstream, **expected: Any) -> None:
    for sent in fake.requests:
        for key, value in expected.items():
            assert sent.get(key) == value, (key, sent)


async def test_openai_compatible_upstream_fields_arrive_whole_and_streamed(tmp_path: Path) -> None:
    n = 2
    async with (
        fake_upstream(Reply(body=whole_body(n)), Reply(stream=stream_events(n))) as fake,
        live(tmp_path, {"ORCH_LLM_PROVIDER": "openai", "ORCH_OPENAI_BASE_URL": fake.url}) as server,
    ):
        client = client_for(server)
        completion = await client.chat.completions.create(
            model="fake-model",
            messages=HI,  # type: ignore[arg-type]
            n=n,
            logprobs=True,
            top_logprobs=2,
        )
        assert completion.system_fingerprint == FINGERPRINT
        assert [choice.index for choice in completion.choices] == [0, 1]
        for choice, words in zip(completion.choices, texts(n), strict=True):
            assert choice.message.content == "".join(words)
            assert choice.logprobs is not None and choice.logprobs.content is not None
            assert [e.model_dump() for e in choice.logprobs.content] == expected_logprobs(words)
        assert completion.usage is not None
        assert completion.usage.total_tokens == 7 + 2 * n
        assert completion.usage.prompt_tokens_details is not None
        assert completion.usage.prompt_tokens_details.model_dump(exclude_none=True) == PROMPT_DETAILS
        assert completion.usage.completion_tokens_details is not None
        assert completion.usage.completion_tokens_details.model_dump(exclude_none=True) == COMPLETION_DETAILS

        stream = await client.chat.completions.create(
            model="fake-model",
            messages=HI,  # type: ignore[arg-type]
            n=n,
            logprobs=True,
            top_logprobs=2,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, logprobs, finish, usage, fingerprints = await collect(stream)
        assert text == {index: "".join(words) for index, words in enumerate(texts(n))}
        assert logprobs == {index: expected_logprobs(words) for index, words in enumerate(texts(n))}
        assert finish == {0: "stop", 1: "stop"}
        assert fingerprints == {FINGERPRINT}
        assert usage is not None and usage.prompt_tokens_details.cached_tokens == PROMPT_DETAILS["cached_tokens"]
        assert usage.completion_tokens_details.reasoning_tokens == COMPLETION_DETAILS["reasoning_tokens"]
    assert len(fake.requests) == 2
    assert_request_carried(fake, n=n, logprobs=True, top_logprobs=2)


async def test_ollama_fans_out_n_requests_and_passes_logprobs(tmp_path: Path) -> None:
    n = 3
    async with (
        fake_upstream(Reply(body=whole_body(1))) as fake,
        serve(fake.url) as (front, front_url),
        live(tmp_path, {"ORCH_LLM_PROVIDER": "ollama", "ORCH_OLLAMA_URL": front_url}) as server,
    ):
        client = client_for(server)
        completion = await client.chat.completions.create(
            model="fake-model",
            messages=HI,  # type: ignore[arg-type]
            n=n,
            logprobs=True,
            top_logprobs=2,
            seed=40,
        )
        assert [choice.index for choice in completion.choices] == [0, 1, 2]
        [words] = texts(1)
        for choice in completion.choices:
            assert choice.message.content == "".join(words)
            assert choice.logprobs is not None and choice.logprobs.content is not None
            assert [e.model_dump() for e in choice.logprobs.content] == expected_logprobs(words)
        assert completion.usage is not None and completion.usage.completion_tokens == 2 * n  # the n calls summed
        sent = list(front.requests)
        assert len(sent) == n
        assert sorted(body["options"]["seed"] for body in sent) == [40, 41, 42]  # distinct, reproducible
        assert all(body["logprobs"] is True and body["top_logprobs"] == 2 and "n" not in body for body in sent)

        fake.script = [Reply(stream=stream_events(1))]
        stream = await client.chat.completions.create(
            model="fake-model",
            messages=HI,  # type: ignore[arg-type]
            n=n,
            logprobs=True,
            top_logprobs=2,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, logprobs, finish, usage, _ = await collect(stream)
        assert text == dict.fromkeys(range(n), "".join(words))
        assert logprobs == dict.fromkeys(range(n), expected_logprobs(words))
        assert finish == dict.fromkeys(range(n), "stop")
        assert usage is not None and usage.completion_tokens == 2 * n
    assert len(fake.requests) == 2 * n
    assert_request_carried(fake, logprobs=True, top_logprobs=2)


async def test_demo_gives_n_deterministic_choices_and_n_is_bounded(live_server: LiveServer) -> None:
    client = client_for(live_server)
    completion = await client.chat.completions.create(model=DEMO_MODEL, messages=HI, n=3)  # type: ignore[arg-type]
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert len({choice.message.content for choice in completion.choices}) == 1
    stream = await client.chat.completions.create(model=DEMO_MODEL, messages=HI, n=3, stream=True)  # type: ignore[arg-type]
    text, _, finish, _, _ = await collect(stream)
    assert text == dict.fromkeys(range(3), completion.choices[0].message.content)
    assert finish == dict.fromkeys(range(3), "stop")
    with pytest.raises(openai.BadRequestError) as too_many:
        await client.chat.completions.create(model=DEMO_MODEL, messages=HI, n=MAX_CHOICES + 1)  # type: ignore[arg-type]
    assert too_many.value.param == "n"
    with pytest.raises(openai.BadRequestError) as agent:
        await client.chat.completions.create(model="agent:holly", messages=HI, n=2)  # type: ignore[arg-type]
    assert agent.value.param == "n" and "n must be 1" in agent.value.message
