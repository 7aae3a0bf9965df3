"""Recall: the caller's relevant memories reach the model's prompt as one bounded system message,
right before the last user message (an agent's system prompt stays first), and the receipt names
the ids used. The fake upstream records exactly what the model was asked."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from app.lifespan import AppState
from app.memory.service import RECALL_HEADER
from tests.conftest import running
from tests.fakes.upstream import FakeUpstream, fake_upstream

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
MEMORY = "/v1/memory"
ON = {
    "memory_enabled": True,
    "memory_capture_enabled": True,
    "memory_write_policy": "strict",
    "memory_recall_enabled": True,
    "trust_panel_enabled": True,
}


@asynccontextmanager
async def gateway(
    app_factory: Callable[..., FastAPI], **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeUpstream, AppState]]:
    async with fake_upstream() as fake:
        values = {**ON, "llm_enabled": True, "llm_provider": "openai", "openai_base_url": fake.url, **settings}
        app = app_factory(**values)
        async with running(app) as client:
            yield client, fake, app.state.orch


async def remember(client: httpx.AsyncClient, content: str, **headers: str) -> str:
    response = await client.post(MEMORY, json={"content": content}, headers=headers)
    assert response.status_code == 201, response.text
    memory_id: str = response.json()["memory"]["id"]
    return memory_id


async def recall_ids(client: httpx.AsyncClient, state: AppState, trace_id: str) -> list[str]:
    await state.tracer.flush()
    report = (await client.get(f"/v1/trust/trace/{trace_id}")).json()
    [step] = [s for s in report["steps"] if s["step_type"] == "memory_recall"]
    ids: list[str] = step["payload"]["ids"]
    return ids


async def test_the_relevant_memory_reaches_the_prompt_before_the_last_user_message(
    app_factory: Callable[..., FastAPI],
) -> None:
    async with gateway(app_factory) as (client, fake, state):
        deploy = await remember(client, "Deployments happen on Fridays after the 10:00 standup")
        await remember(client, "My favourite colour is green")
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "What did I ask you to remember about deployments?"},
        ]
        response = await client.post(CHAT, json={"model": "fake-model", "messages": messages})
        assert response.status_code == 200, response.text
        sent = fake.requests[-1]["messages"]
        assert sent[0] == messages[0] and sent[-1] == messages[-1]
        assert [m["role"] for m in sent] == ["system", "user", "assistant", "system", "user"]
        recalled = sent[3]["content"]
        assert recalled.startswith(RECALL_HEADER)
        assert "Deployments happen on Fridays" in recalled and "green" not in recalled
        assert await recall_ids(client, state, response.json()["request_id"]) == [deploy]
        # the caller's request is not changed, and nothing was captured from a question
        assert response.json()["memory_decision"]["reason"] == "deny:no_explicit_intent"


async def test_recall_is_bounded_scoped_and_off_by_default(app_factory: Callable[..., FastAPI]) -> None:
    async with gateway(
        app_factory, memory_recall_max_items=2, memory_recall_max_chars=200, principals="bob=bob-token-0123456789"
    ) as (
        client,
        fake,
        state,
    ):
        for n in range(4):
            await remember(client, f"garden fact {n}: " + "the tomatoes need water " * 3)
        await remember(client, "garden secret plan for this conversation only", **{"X-Conversation-ID": "c1"})
        ask = {"model": "fake-model", "messages": [{"role": "user", "content": "tell me about the garden"}]}
        response = await client.post(CHAT, json=ask)
        recalled = [m for m in fake.requests[-1]["messages"] if m["role"] == "system"]
        assert len(recalled) == 1 and len(recalled[0]["content"]) <= 200
        ids = await recall_ids(client, state, response.json()["request_id"])
        assert 1 <= len(ids) <= 2
        assert "conversation only" not in recalled[0]["content"]
        in_conversation = await client.post(CHAT, json=ask, headers={"X-Conversation-ID": "c1"})
        assert in_conversation.status_code == 200
        [scoped] = [m for m in fake.requests[-1]["messages"] if m["role"] == "system"]
        assert "conversation only" in scoped["content"]
        # another principal recalls nothing of the owner's
        await client.post(CHAT, json=ask, headers={"Authorization": "Bearer bob-token-0123456789"})
        assert [m["role"] for m in fake.requests[-1]["messages"]] == ["user"]
    async with gateway(app_factory, memory_recall_enabled=False) as (client, fake, _):
        await remember(client, "Deployments happen on Fridays")
        await client.post(CHAT, json={"model": "fake-model", "messages": [{"role": "user", "content": "deployments?"}]})
        assert [m["role"] for m in fake.requests[-1]["messages"]] == ["user"]


async def test_an_agent_that_replaces_system_prompts_keeps_the_recall(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "holly.yaml").write_text(
        (ROOT / "policies" / "agents" / "holly.yaml").read_text()
    )  # the router names her
    (agents / "nova.yaml").write_text(
        "name: Nova\ndescription: test agent\nsystem_prompt: You are Nova.\nreplace_system_prompt: true\ntools: []\n"
    )
    async with gateway(app_factory, agent_dir=agents) as (client, fake, _):
        await remember(client, "Deployments happen on Fridays")
        messages = [
            {"role": "system", "content": "caller prompt"},
            {"role": "user", "content": "when are deployments?"},
        ]
        response = await client.post(CHAT, json={"model": "agent:nova", "messages": messages})
        assert response.status_code == 200, response.text
        sent = fake.requests[-1]["messages"]
        assert sent[0] == {"role": "system", "content": "You are Nova."}
        assert [m["role"] for m in sent] == ["system", "system", "user"]
        assert "Fridays" in sent[1]["content"] and "caller prompt" not in str(sent)


async def test_a_stream_carries_the_memory_decision_on_its_first_chunk(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory(**ON)) as client:  # the demo provider streams
        body = {"messages": [{"role": "user", "content": "remember that the shed is red"}], "stream": True}
        response = await client.post(CHAT, json=body)
        assert response.status_code == 200
        first = response.text.split("\n\n")[0].removeprefix("data: ")
        assert json.loads(first)["memory_decision"]["reason"] == "allow:explicit_intent"
