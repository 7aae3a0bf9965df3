"""Agents and routing against the real server (uvicorn), driven by the official `openai` client.

The original answered 502 to every agent chat; here Holly answers through the agent route, through
an SDK pointed at ``/v1/agents/holly``, and through ``model="agent:holly"``, whole and streamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from app.providers.demo import DEMO_HEADER
from tests.e2e.server import E2E_TOKEN, ENTRY_POINTS, LiveServer, entry_command, run_to_exit, stderr_lines

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "Hi Holly, who are you?"}]


def client_for(server: LiveServer, base: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + base, api_key=E2E_TOKEN, max_retries=0, timeout=10)


def extra(completion: ChatCompletion | ChatCompletionChunk) -> dict[str, object]:
    return completion.model_extra or {}


def test_agent_chat_through_the_agent_route(live_server: LiveServer) -> None:
    completion = client_for(live_server).post("/agents/holly/chat", body={"messages": HI}, cast_to=ChatCompletion)
    assert completion.object == "chat.completion"
    assert extra(completion)["agent"] == "Holly"
    assert (completion.choices[0].message.content or "").startswith(DEMO_HEADER)
    assert completion.choices[0].finish_reason == "stop"


def test_an_sdk_pointed_at_the_agent_talks_to_holly_whole_and_streamed(live_server: LiveServer) -> None:
    holly = client_for(live_server, "/v1/agents/holly")
    whole = holly.chat.completions.create(model="orchestrators-demo", messages=HI)  # type: ignore[arg-type]
    assert extra(whole)["agent"] == "Holly"
    stream = holly.chat.completions.create(model="orchestrators-demo", messages=HI, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    assert extra(chunks[0])["agent"] == "Holly"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content


def test_model_agent_holly_on_the_openai_route(live_server: LiveServer) -> None:
    client = client_for(live_server)
    completion = client.chat.completions.create(model="agent:holly", messages=HI)  # type: ignore[arg-type]
    assert extra(completion)["agent"] == "Holly"
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="agent:nobody", messages=HI)  # type: ignore[arg-type]
    assert caught.value.code == "agent_not_found"


def test_agent_errors_reach_the_sdk_as_typed_exceptions(live_server: LiveServer) -> None:
    client = client_for(live_server)
    with pytest.raises(openai.BadRequestError) as bad:
        client.post("/agents/holly/chat", body={"messages": []}, cast_to=ChatCompletion)
    assert bad.value.param == "messages"
    with pytest.raises(openai.NotFoundError):
        client.post("/agents/nobody/chat", body={"messages": HI}, cast_to=ChatCompletion)
    with pytest.raises(openai.AuthenticationError):
        client_for(live_server).with_options(api_key="wrong").post(
            "/agents/holly/chat", body={"messages": HI}, cast_to=ChatCompletion
        )
    listing = httpx.get(live_server.url + "/v1/agents", headers={"Authorization": f"Bearer {E2E_TOKEN}"}).json()
    assert listing["count"] == 1 and listing["agents"][0]["name"] == "Holly"


@pytest.fixture(scope="module")
def advanced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"ORCH_ORCHESTRATOR_MODE": "advanced", "ORCH_RATE_LIMIT": "100 per minute"}
    with LiveServer(tmp_path_factory.mktemp("advanced"), env) as server:
        yield server


def test_advanced_mode_routes_by_the_policy(advanced_server: LiveServer) -> None:
    client = client_for(advanced_server)
    mention = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "@holly hi"}])
    assert extra(mention)["agent"] == "Holly"
    route = extra(mention)["route_decision"]
    assert isinstance(route, dict) and route["rule"] == "agents.holly_mention"
    calc = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "calculate 2 + 2"}])
    assert calc.choices[0].message.content == "Tool [safe_calc] result: 4"
    assert extra(calc)["tool_result"] == {
        "status": "ok",
        "tool": "safe_calc",
        "result": 4,
        "truncated": False,
        "trace_id": calc.model_extra["request_id"],
    }
    cats = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I have 3 cats"}])
    assert (cats.choices[0].message.content or "").startswith(DEMO_HEADER)
    assert extra(cats)["tool_result"] is None
    header = client.with_options(default_headers={"X-Orch-Meta-Agent": "holly"}).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello"}]
    )
    assert extra(header)["agent"] == "Holly"


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_bad_agent_or_policy_file_stops_the_service_with_one_line(tmp_path: Path, entry: str) -> None:
    command = entry_command(entry)
    agents = tmp_path / "agents"
    agents.mkdir()
    for agent, reason in (
        ("toolz: []", "toolz: Extra inputs are not permitted"),
        # an agent naming a tool the registry does not have: the same one line, naming the file
        ("tools: [nosuch]", "tools: no such tool ['nosuch']"),
    ):
        (agents / "holly.yaml").write_text(f"name: Holly\nsystem_prompt: hi\n{agent}\n")
        result = run_to_exit(tmp_path, command, {"ORCH_AGENT_DIR": str(agents)})
        assert result.returncode == 2, result.stderr
        assert stderr_lines(result) == [
            f"orchestrators: invalid policy: ORCH_AGENT_DIR: {agents / 'holly.yaml'}: {reason}"
        ]
    policy = tmp_path / "router_policy.yaml"
    policy.write_text("rules:\n  - id: calc\n    when: {message: 'x'}\n    target: {agent: nobody}\n")
    result = run_to_exit(tmp_path, command, {"ORCH_ROUTER_POLICY_PATH": "router_policy.yaml"})  # relative: cwd
    assert result.returncode == 2
    lines = stderr_lines(result)
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].endswith(f"{policy}: rule 'calc': there is no agent named 'nobody' (ORCH_AGENT_DIR)")


@pytest.mark.parametrize("mode", ["basic", "advanced"])
def test_an_agent_dir_without_holly_serves(tmp_path: Path, mode: str) -> None:
    """docs/agents.md: replace Holly with your own ORCH_AGENT_DIR; the shipped router policy's
    Holly rules are then left out rather than stopping the service."""
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "nova.yaml").write_text("name: Nova\nsystem_prompt: hi\n")
    with LiveServer(tmp_path, {"ORCH_AGENT_DIR": str(agents), "ORCH_ORCHESTRATOR_MODE": mode}) as server:
        nova = client_for(server, "/v1/agents/nova").chat.completions.create(model="m", messages=HI)
        assert extra(nova)["agent"] == "Nova"
