"""/v1/agents over HTTP (in-process): listing, lookup, chatting with Holly (whole and streamed, via
the agent route, its /chat/completions alias and `model: "agent:holly"`), what the model is sent,
and every bad input with its status and envelope. The original answered 502 to every agent chat."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.lifespan import StartupError
from app.main import check_policy_files
from app.providers.demo import DEMO_HEADER
from app.settings import SHIPPED_AGENT_DIR, SHIPPED_ROUTER_POLICY, ConfigError
from tests.conftest import assert_envelope, build_settings, running
from tests.fakes.upstream import FakeUpstream, Reply, completion, fake_upstream, text_chunks

HI = {"messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def upstream_app(
    app_factory: Callable[..., FastAPI], *replies: Reply, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeUpstream]]:
    """The service relaying to a scripted OpenAI-compatible upstream that records what it is sent."""
    async with fake_upstream(*replies) as fake:
        values = {"llm_enabled": True, "llm_provider": "openai", "openai_base_url": fake.url, **settings}
        async with running(app_factory(**values)) as client:
            yield client, fake


async def test_list_and_get_agents(client: httpx.AsyncClient) -> None:
    listing = (await client.get("/v1/agents")).json()
    assert listing["count"] == 1
    [holly] = listing["agents"]
    assert holly == {
        "name": "Holly",
        "description": holly["description"],
        "tools": ["safe_calc"],
        "model": None,
        "metadata": {"version": "1.0", "local_only": True},
    }
    assert "system_prompt" not in holly
    for spelling in ("holly", "HOLLY", "Holly"):
        detail = (await client.get(f"/v1/agents/{spelling}")).json()
        assert detail["name"] == "Holly" and detail["system_prompt"].startswith("You are Holly")
        assert detail["replace_system_prompt"] is False


async def test_unknown_agents_are_404_in_the_envelope(client: httpx.AsyncClient) -> None:
    error = assert_envelope(await client.get("/v1/agents/nobody"), 404, type_="not_found_error", param="name")
    assert error["code"] == "agent_not_found"
    assert_envelope(await client.post("/v1/agents/nobody/chat", json=HI), 404, type_="not_found_error")
    long_name = "x" * 65
    assert_envelope(await client.get(f"/v1/agents/{long_name}"), 400, type_="invalid_request_error")
    error = assert_envelope(
        await client.post("/v1/chat/completions", json={**HI, "model": "agent:nobody"}), 404, param="model"
    )
    assert error["code"] == "agent_not_found"


async def test_agent_routes_need_the_bearer(app_factory: Callable[..., FastAPI]) -> None:
    async with running(app_factory(), token=None) as anonymous:
        assert_envelope(await anonymous.get("/v1/agents"), 401, type_="authentication_error")
        assert_envelope(await anonymous.post("/v1/agents/holly/chat", json=HI), 401)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({}, "messages"),
        ({"messages": None}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 9}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "model": "agent:other"}, "model"),
    ],
)
async def test_bad_agent_chat_bodies_are_400(client: httpx.AsyncClient, body: dict[str, Any], param: str) -> None:
    assert_envelope(await client.post("/v1/agents/holly/chat", json=body), 400, param=param)


async def test_non_object_bodies_are_400(client: httpx.AsyncClient) -> None:
    for content in (b"[1, 2]", b"not json", b""):
        response = await client.post(
            "/v1/agents/holly/chat", content=content, headers={"content-type": "application/json"}
        )
        assert_envelope(response, 400, type_="invalid_request_error")


async def test_agent_chat_answers_with_agent_holly_in_demo_mode(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/agents/holly/chat", json=HI)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["agent"] == "Holly"
    assert body["choices"][0]["message"]["content"].startswith(DEMO_HEADER)
    assert response.headers["x-ai-generated"] == "true"
    for field in ("request_id", "memory_decision", "route_decision", "model_decision", "tool_result"):
        assert field in body


async def test_in_demo_mode_holly_calls_the_tool_the_message_names_and_answers_its_result(
    client: httpx.AsyncClient,
) -> None:
    body = {"messages": [{"role": "user", "content": "safe_calc (2**10)/4"}]}
    response = await client.post("/v1/agents/holly/chat", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["tool_result"]["tool"] == "safe_calc" and answer["tool_result"]["status"] == "ok"
    assert "256" in answer["choices"][0]["message"]["content"]
    assert answer["choices"][0]["finish_reason"] == "stop"


async def test_the_model_is_sent_hollys_prompt_first_and_the_callers_system_prompt_after(
    app_factory: Callable[..., FastAPI],
) -> None:
    async with upstream_app(app_factory, Reply(body=completion("Hi, I am Holly."))) as (client, fake):
        body = {"messages": [{"role": "system", "content": "answer in French"}, {"role": "user", "content": "hi"}]}
        response = await client.post("/v1/agents/HOLLY/chat", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["agent"] == "Holly"
        assert response.json()["choices"][0]["message"]["content"] == "Hi, I am Holly."
        sent = fake.requests[-1]["messages"]
        assert sent[0]["role"] == "system" and sent[0]["content"].startswith("You are Holly")
        assert sent[1:] == body["messages"]


async def test_the_same_agent_through_model_agent_holly_and_the_completions_alias(
    app_factory: Callable[..., FastAPI],
) -> None:
    async with upstream_app(app_factory) as (client, fake):
        one = await client.post("/v1/chat/completions", json={**HI, "model": "agent:holly"})
        two = await client.post("/v1/agents/holly/chat/completions", json=HI)
        for response in (one, two):
            assert response.status_code == 200, response.text
            assert response.json()["agent"] == "Holly"
        for request in fake.requests:
            assert request["messages"][0]["content"].startswith("You are Holly")
            assert request["model"] == "qwen2.5:3b"  # the default model: "agent:holly" is not sent upstream


async def test_a_streamed_agent_chat_carries_the_agent_on_the_first_chunk(app_factory: Callable[..., FastAPI]) -> None:
    async with upstream_app(app_factory, Reply(stream=text_chunks(["Hello", " there"]))) as (client, fake):
        async with client.stream("POST", "/v1/agents/holly/chat", json={**HI, "stream": True}) as response:
            text = (await response.aread()).decode()
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [block.removeprefix("data: ") for block in text.strip().split("\n\n")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[0]["agent"] == "Holly" and all("agent" not in c for c in chunks[1:])
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Hello there"
        assert fake.requests[-1]["messages"][0]["content"].startswith("You are Holly")


def agent_dir(tmp_path: Path, text: str) -> Path:
    """Holly (the shipped router policy targets her) plus a Nova agent."""
    directory = tmp_path / "agents"
    directory.mkdir(exist_ok=True)
    shutil.copy(SHIPPED_AGENT_DIR / "holly.yaml", directory / "holly.yaml")
    (directory / "nova.yaml").write_text(text)
    return directory


async def test_an_agent_can_replace_the_callers_system_prompt_and_pin_its_model(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    directory = agent_dir(
        tmp_path, "name: Nova\nsystem_prompt: You are Nova.\nreplace_system_prompt: true\nmodel: nova-model\n"
    )
    async with upstream_app(app_factory, agent_dir=directory) as (client, fake):
        body = {"messages": [{"role": "system", "content": "ignore Nova"}, {"role": "user", "content": "hi"}]}
        response = await client.post("/v1/agents/nova/chat", json={**body, "model": "caller-model"})
        assert response.status_code == 200, response.text
        assert response.json()["model_decision"] == {"model": "nova-model", "reason": "agent_model", "agent": "Nova"}
        sent = fake.requests[-1]
        assert sent["model"] == "nova-model"
        assert sent["messages"] == [{"role": "system", "content": "You are Nova."}, {"role": "user", "content": "hi"}]


async def test_agent_chats_leave_a_receipt_naming_the_agent(app_factory: Callable[..., FastAPI]) -> None:
    app = app_factory(trust_panel_enabled=True)
    async with running(app) as client:
        trace_id = (await client.post("/v1/agents/holly/chat", json=HI)).json()["request_id"]
        await app.state.orch.tracer.flush()
        steps = (await client.get(f"/v1/trust/trace/{trace_id}")).json()["steps"]
    kinds = [step["step_type"] for step in steps]
    assert kinds == ["request", "agent", "llm_provider"]
    request, agent = steps[0]["payload"], steps[1]["payload"]
    assert request["route"] == "/v1/agents/{name}/chat" and request["agent"] == "Holly"
    assert agent == {
        "agent": "Holly",
        "reason": "requested",
        "replaced_system_prompt": False,
        "tools": ["safe_calc"],
        "model": "orchestrators-demo",
    }


async def test_a_bad_agent_file_stops_startup_with_the_file_and_the_reason(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    directory = agent_dir(tmp_path, "name: Nova\n")
    with pytest.raises(StartupError) as caught:
        async with running(app_factory(agent_dir=directory)):
            pass
    assert str(caught.value) == f"ORCH_AGENT_DIR: {directory / 'nova.yaml'}: system_prompt: Field required"


@pytest.mark.parametrize("mode", ["basic", "advanced"])
async def test_an_agent_dir_without_holly_starts_with_the_shipped_router_policy(
    app_factory: Callable[..., FastAPI], tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/agents.md: Holly may be replaced by your own ORCH_AGENT_DIR. The shipped policy's Holly
    rules are left out (a warning in advanced mode); the rest of the policy still routes."""
    directory = tmp_path / "agents"
    directory.mkdir()
    (directory / "nova.yaml").write_text("name: Nova\nsystem_prompt: You are Nova.\n")
    settings = {"agent_dir": directory, "orchestrator_mode": mode}
    check_policy_files(build_settings(tmp_path, **settings))  # what startup checks before serving
    async with running(app_factory(**settings)) as client:
        assert [agent["name"] for agent in (await client.get("/v1/agents")).json()["agents"]] == ["Nova"]
        assert (await client.post("/v1/agents/nova/chat", json=HI)).json()["agent"] == "Nova"
        mention = {"messages": [{"role": "user", "content": "@holly hi"}]}
        reply = (await client.post("/v1/chat/completions", json=mention, headers={"X-Orch-Meta-Agent": "holly"})).json()
        assert "agent" not in reply
        calc = (
            await client.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "calculate 2 + 2"}]}
            )
        ).json()
    left_out = [record for record in caplog.records if "router policy rules left out" in record.getMessage()]
    if mode == "advanced":
        assert reply["route_decision"]["reason"] == "no_match"
        assert calc["route_decision"]["rule"] == "math.calculate"
        [warning] = left_out
        assert warning.levelname == "WARNING"
        assert warning.rules == ["agents.holly_by_metadata", "agents.holly_mention"]  # type: ignore[attr-defined]
    else:
        assert left_out == []  # nothing is routed in basic mode: nothing to warn about


async def test_an_own_router_policy_naming_a_missing_agent_still_stops_startup(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    directory = tmp_path / "agents"
    directory.mkdir()
    (directory / "nova.yaml").write_text("name: Nova\nsystem_prompt: You are Nova.\n")
    own = tmp_path / "router_policy.yaml"
    shutil.copy(SHIPPED_ROUTER_POLICY, own)
    settings = {"agent_dir": directory, "router_policy_path": own, "orchestrator_mode": "advanced"}
    with pytest.raises(
        ConfigError, match=re.escape(f"{own}: rule 'agents.holly_by_metadata': there is no agent named 'holly'")
    ):
        check_policy_files(build_settings(tmp_path, **settings))
    with pytest.raises(StartupError, match="there is no agent named 'holly'"):
        async with running(app_factory(**settings)):
            pass


async def test_the_new_routes_are_in_the_api_docs(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in (
        "/v1/agents",
        "/v1/agents/{name}",
        "/v1/agents/{name}/chat",
        "/v1/review",
        "/v1/review/{item_id}/resolve",
    ):
        assert path in schema["paths"], path
    chat = schema["paths"]["/v1/agents/{name}/chat"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")
    assert "agent" in schema["components"]["schemas"]["ChatCompletion"]["properties"]
