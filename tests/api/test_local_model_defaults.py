"""The defaults suit one person running a local model on a laptop: minutes-long generations, long
replies, a chat UI's and a tool loop's bursts of calls; and a timeout says which flag to raise."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from app.settings import Settings
from tests.api.test_provider_faults import CHAT, HELLO, gateway, sse
from tests.conftest import assert_envelope, running
from tests.fakes.upstream import Reply, completion, text_chunks

DEFAULTS = Settings.model_fields


def test_the_upstream_may_think_for_minutes_by_default() -> None:
    # A non-streamed answer sends nothing until it is whole: minutes on a laptop CPU.
    assert DEFAULTS["llm_timeout_sec"].default >= 300


async def test_a_long_reply_is_kept_whole_with_the_default_cap(app_factory: Callable[..., FastAPI]) -> None:
    long = "word " * 24_000  # 120,000 characters: a long document from a 32k-context model
    replies = (
        Reply(body=completion(long)),
        Reply(stream=text_chunks([long[i : i + 1000] for i in range(0, len(long), 1000)])),
    )
    cap = DEFAULTS["llm_max_output_chars"].default
    async with gateway(app_factory, *replies, llm_max_output_chars=cap) as (client, _):
        whole = (await client.post(CHAT, json=HELLO)).json()
        streamed = sse((await client.post(CHAT, json={**HELLO, "stream": True})).text)
    assert whole["choices"][0]["message"]["content"] == long
    assert whole["choices"][0]["finish_reason"] == "stop"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in streamed[:-1] if e["choices"]) == long


async def test_the_default_rate_limit_takes_a_burst_of_a_hundred_calls(app_factory: Callable[..., FastAPI]) -> None:
    # A chat UI and an agent's tool loop make several calls per turn; the former 60 per minute
    # refused the 61st call of a busy minute.
    async with running(app_factory(rate_limit=DEFAULTS["rate_limit"].default)) as client:
        statuses = [(await client.get("/v1/models")).status_code for _ in range(100)]
    assert statuses == [200] * 100


async def test_the_504_says_which_flag_to_raise(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(app_factory, Reply(hang=True), llm_timeout_sec=0.5) as (client, _):
        error = assert_envelope(await client.post(CHAT, json=HELLO), 504, type_="provider_error")
    assert error["code"] == "provider_timeout"
    assert "within 0.5 s" in error["message"] and "raise ORCH_LLM_TIMEOUT_SEC" in error["message"]
