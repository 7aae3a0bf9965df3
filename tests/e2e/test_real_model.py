"""The gateway against a REAL language model, offline, with the official ``openai`` client.

llama.cpp's ``llama-server`` runs SmolLM2-135M-Instruct (tests/e2e/llm.py). The gateway is started
as users start it (``python -m app``) with ``ORCH_LLM_PROVIDER=openai`` pointed at llama-server, and
with ``ORCH_LLM_PROVIDER=ollama`` pointed at tests/fakes/ollama_front.py (Ollama's native API over
the same llama-server). The model's wording is never asserted (it rambles), only the shapes and
behaviour a client relies on. Every generation is small except the one that is cut off.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.llm import MODEL_ALIAS, SLOT_CONTEXT_TOKENS, LlamaServer, OllamaFrontProcess
from tests.e2e.server import E2E_TOKEN, LiveServer, free_port

pytestmark = pytest.mark.e2e

PROVIDERS = ("openai", "ollama")
# What /v1/models shows: llama-server's alias as is; Ollama names carry a tag (":latest" by default).
LISTED_MODEL = {"openai": MODEL_ALIAS, "ollama": f"{MODEL_ALIAS}:latest"}
STORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a long story about a dragon who learns to cook."}
]
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
TOO_LONG: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello world " * (SLOT_CONTEXT_TOKENS * 3 // 4)}
]  # ~3000 tokens
CAP = 20  # ORCH_LLM_MAX_OUTPUT_CHARS of the capped gateways


@dataclass
class Gateway:
    provider: str
    server: LiveServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.url + "/v1", api_key=E2E_TOKEN, max_retries=0, timeout=60)


def start_gateway(workdir: Path, provider: str, upstream: str, **env: str) -> LiveServer:
    values = {
        "ORCH_LLM_ENABLED": "1",
        "ORCH_LLM_PROVIDER": provider,
        "ORCH_MODEL_CHAT": MODEL_ALIAS,
        "ORCH_RATE_LIMIT": "1000 per minute",
        "ORCH_LLM_TIMEOUT_SEC": "30",
        "ORCH_OPENAI_BASE_URL" if provider == "openai" else "ORCH_OLLAMA_URL": upstream,
        **env,
    }
    return LiveServer(workdir, values).start()


def upstream_for(provider: str, llama: LlamaServer, front: OllamaFrontProcess) -> str:
    return llama.openai_url if provider == "openai" else front.url


@pytest.fixture(scope="module", params=PROVIDERS)
def gateway(
    request: pytest.FixtureRequest,
    llama_server: LlamaServer,
    ollama_front: OllamaFrontProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    provider: str = request.param
    server = start_gateway(
        tmp_path_factory.mktemp(provider), provider, upstream_for(provider, llama_server, ollama_front)
    )
    try:
        yield Gateway(provider, server)
    finally:
        server.stop()


@pytest.fixture(scope="module", params=PROVIDERS)
def capped_gateway(
    request: pytest.FixtureRequest, llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway with ORCH_LLM_MAX_OUTPUT_CHARS=20. Its model ignores end-of-sequence (``ignore_eos``:
    forwarded by the openai provider; added upstream by its own Ollama front, as Ollama has no such
    option), so an answer only ends at max_tokens or when the gateway stops it."""
    provider: str = request.param
    workdir = tmp_path_factory.mktemp(f"capped-{provider}")
    with OllamaFrontProcess(workdir, llama_server.openai_url, upstream_extra={"ignore_eos": True}) as front:
        server = start_gateway(
            workdir, provider, upstream_for(provider, llama_server, front), ORCH_LLM_MAX_OUTPUT_CHARS=str(CAP)
        )
        try:
            yield Gateway(provider, server)
        finally:
            server.stop()


@dataclass
class Collected:
    chunks: list[Any]
    text: str
    finish_reasons: list[str | None]
    usage: Any


def collect(stream: Any) -> Collected:
    chunks = list(stream)
    choice_chunks = [chunk for chunk in chunks if chunk.choices]
    usage_chunks = [chunk for chunk in chunks if not chunk.choices]
    return Collected(
        chunks=chunks,
        text="".join(chunk.choices[0].delta.content or "" for chunk in choice_chunks),
        finish_reasons=[chunk.choices[0].finish_reason for chunk in choice_chunks],
        usage=usage_chunks[-1].usage if usage_chunks else None,
    )


def test_chat_completion(gateway: Gateway) -> None:
    raw = gateway.client.chat.completions.with_raw_response.create(
        model=MODEL_ALIAS, messages=HELLO, max_tokens=16, temperature=0
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == MODEL_ALIAS
    [choice] = completion.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    request_id = (completion.model_extra or {})["request_id"]  # the orchestrator's receipt id
    assert isinstance(request_id, str) and request_id
    assert raw.headers["x-ai-generated"] == "true"


def test_streamed_chat(gateway: Gateway) -> None:
    stream = gateway.client.chat.completions.create(
        model=MODEL_ALIAS,
        messages=HELLO,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    got = collect(stream)
    first = got.chunks[0]
    assert first.choices[0].delta.role == "assistant"
    request_id = (first.model_extra or {})["request_id"]
    assert isinstance(request_id, str) and request_id
    assert {chunk.id for chunk in got.chunks} == {first.id}
    assert got.text.strip()
    assert got.finish_reasons[-1] in ("stop", "length")
    assert all(reason is None for reason in got.finish_reasons[:-1])
    # The usage chunk comes last, with empty choices.
    assert not got.chunks[-1].choices
    assert got.usage is not None
    assert got.usage.prompt_tokens > 0 and 0 < got.usage.completion_tokens <= 16


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_max_tokens_is_honoured(gateway: Gateway, stream: bool) -> None:
    options: dict[str, Any] = {"model": MODEL_ALIAS, "messages": STORY, "max_tokens": 5, "temperature": 0}
    if stream:
        got = collect(
            gateway.client.chat.completions.create(**options, stream=True, stream_options={"include_usage": True})
        )
        finish, usage, text = got.finish_reasons[-1], got.usage, got.text
    else:
        completion = gateway.client.chat.completions.create(**options)
        [choice] = completion.choices
        finish, usage, text = choice.finish_reason, completion.usage, choice.message.content
    assert finish == "length"
    assert usage is not None and 0 < usage.completion_tokens <= 5
    assert text


def test_models_lists_the_served_model(gateway: Gateway) -> None:
    listed = LISTED_MODEL[gateway.provider]
    models = gateway.client.models.list()
    assert listed in [model.id for model in models.data]
    assert gateway.client.models.retrieve(listed).id == listed


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_upstream_400_is_passed_through(gateway: Gateway, stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as rejected:
        gateway.client.chat.completions.create(model=MODEL_ALIAS, messages=TOO_LONG, max_tokens=5, stream=stream)
    assert rejected.value.status_code == 400
    body: dict[str, Any] = rejected.value.body  # type: ignore[assignment]
    # llama-server's own words: "request (N tokens) exceeds the available context size (2048 tokens), ..."
    assert "exceeds the available context size" in body["message"]


def test_ready_with_the_provider_up(gateway: Gateway) -> None:
    response = httpx.get(gateway.url + "/ready", timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ready"
    assert response.json()["checks"]["provider"] == "ok"


def test_output_cap_whole(capped_gateway: Gateway) -> None:
    completion = capped_gateway.client.chat.completions.create(
        model=MODEL_ALIAS, messages=STORY, max_tokens=48, temperature=0
    )
    [choice] = completion.choices
    assert choice.message.content is not None and len(choice.message.content) == CAP
    assert choice.finish_reason == "length"


def test_output_cap_streamed_stops_the_model(capped_gateway: Gateway, llama_server: LlamaServer) -> None:
    # Without a stop, 1000 tokens keep the model busy for ~9 s after the 20th character: the cap
    # must stop the generation upstream, not just cut what the gateway relays.
    got = collect(
        capped_gateway.client.chat.completions.create(
            model=MODEL_ALIAS,
            messages=STORY,
            max_tokens=1000,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
    )
    assert len(got.text) == CAP
    assert got.finish_reasons[-1] == "length"
    assert all(reason is None for reason in got.finish_reasons[:-1])
    assert llama_server.wait_idle(1.5) is not None, f"the model kept generating: {llama_server.slots()}"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unreachable_provider(provider: str, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    server = start_gateway(tmp_path, provider, dead + "/v1" if provider == "openai" else dead)
    try:
        ready = httpx.get(server.url + "/ready", timeout=10)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=E2E_TOKEN, max_retries=0, timeout=30)
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model=MODEL_ALIAS, messages=HELLO, max_tokens=5)
    finally:
        server.stop()
    assert ready.status_code == 503, ready.text
    assert ready.json()["status"] == "unready"
    assert ready.json()["reason"] == "provider_unreachable"
    assert failed.value.status_code == 502
    assert failed.value.body["code"] == "provider_unreachable"  # type: ignore[index]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_client_disconnect_stops_generation(provider: str, llama_server: LlamaServer, tmp_path: Path) -> None:
    # A long generation: ignore_eos keeps the model going to max_tokens (~20 s). The openai provider
    # forwards it; for Ollama (which has no such option) a front of our own adds it upstream.
    with OllamaFrontProcess(tmp_path, llama_server.openai_url, upstream_extra={"ignore_eos": True}) as front:
        (tmp_path / "gateway").mkdir()
        server = start_gateway(tmp_path / "gateway", provider, upstream_for(provider, llama_server, front))
        try:
            assert llama_server.wait_idle(5) is not None, "llama-server is busy before the test"
            mark = llama_server.log_size()
            client = openai.OpenAI(base_url=server.url + "/v1", api_key=E2E_TOKEN, max_retries=0, timeout=30)
            stream = client.chat.completions.create(
                model=MODEL_ALIAS,
                messages=STORY,
                max_tokens=2000,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            pieces = 0
            for chunk in stream:
                pieces += bool(chunk.choices and chunk.choices[0].delta.content)
                if pieces == 2:
                    break
            assert llama_server.busy(), "the model should still be generating"
            stream.close()  # the client goes away mid-answer
            idle_after = llama_server.wait_idle(1.5)
            assert idle_after is not None, f"the model kept generating after the client left: {llama_server.slots()}"
            deadline = time.monotonic() + 1.0
            while "cancel task" not in llama_server.logs_since(mark) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert "cancel task" in llama_server.logs_since(mark)
        finally:
            server.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_logprobs_and_n_from_the_real_model(gateway: Gateway, stream: bool) -> None:
    """The model's own logprobs come back (llama-server computes them; Ollama's API carries them
    through the front); n = 2 through Ollama is two generations, as two choices."""
    n = 2 if gateway.provider == "ollama" else 1  # llama-server itself serves one choice per request
    asked: dict[str, Any] = {"max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 2, "n": n}
    client = gateway.client
    if not stream:
        completion = client.chat.completions.create(model=MODEL_ALIAS, messages=HELLO, **asked)
        assert [choice.index for choice in completion.choices] == list(range(n))
        for choice in completion.choices:
            assert choice.logprobs is not None and choice.logprobs.content
            assert all(len(entry.top_logprobs) == 2 for entry in choice.logprobs.content)
            assert "".join(entry.token for entry in choice.logprobs.content) == choice.message.content
        return
    chunks = list(client.chat.completions.create(model=MODEL_ALIAS, messages=HELLO, stream=True, **asked))
    text: dict[int, str] = {}
    tokens: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            text[choice.index] = text.get(choice.index, "") + (choice.delta.content or "")
            for entry in (choice.logprobs.content or []) if choice.logprobs else []:
                tokens[choice.index] = tokens.get(choice.index, "") + entry.token
    assert sorted(text) == list(range(n))
    assert tokens == text  # every token's logprob came with it
