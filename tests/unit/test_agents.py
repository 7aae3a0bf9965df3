"""Agent files: Holly ships and loads; every kind of bad file is refused with the file and the reason;
applying an agent to a turn (prompt placement, replacement, tools, model) without touching the request."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from app.agents.registry import load_agents
from app.agents.stage import AgentStage, agent_from_model, apply_agent
from app.auth import ANONYMOUS
from app.errors import NotFound
from app.orchestrator.turn import CallContext, Decisions, Turn
from app.policy_files import PolicyFileError
from app.providers.base import ProviderRequest
from app.receipts.tracer import Trace
from app.schemas.chat import ChatCompletionRequest
from app.settings import SHIPPED_AGENT_DIR

VALID = "name: Nova\nsystem_prompt: You are Nova.\n"


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_holly_ships_as_the_starter_agent() -> None:
    agents = load_agents(SHIPPED_AGENT_DIR)
    holly = agents.get("HOLLY")
    assert holly is not None and holly.name == "Holly"
    assert "Holly" in holly.system_prompt
    assert holly.tools == ["safe_calc"]
    assert holly.replace_system_prompt is False
    assert holly.metadata == {"version": "1.0", "local_only": True}
    assert agents.get("holly") is agents.get("hOlLy")


def test_agents_are_listed_in_file_name_order(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", "name: Zed\nsystem_prompt: z\n")
    write(tmp_path, "a.yml", "name: Yan\nsystem_prompt: y\n")
    write(tmp_path, "notes.txt", "not an agent")
    assert [a.name for a in load_agents(tmp_path).all()] == ["Yan", "Zed"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name: Nova\n", "system_prompt: Field required"),
        ("system_prompt: hi\n", "name: Field required"),
        ("name: Nova\nsystem_prompt: '   '\n", "system_prompt: must not be blank"),
        (VALID + "toolz: [echo]\n", "toolz: Extra inputs are not permitted"),
        ("name: 'no spaces please'\nsystem_prompt: x\n", "name: String should match pattern"),
        (VALID + "tools: ['rm -rf']\n", "is not a tool name"),
        (VALID + "tools: [echo, echo]\n", "a tool is listed twice"),
        (VALID + "tools: echo\n", "tools: Input should be a valid list"),
        ("name: Nova\nsystem_prompt: [unclosed\n", "invalid YAML (line 3, column 1)"),
        ("- name: Nova\n", "expected a mapping at the top level, found a list"),
        ("", "expected a mapping at the top level, found empty"),
        (VALID + "system_prompt: " + "x" * 32_001 + "\n", "system_prompt: String should have at most"),
    ],
)
def test_a_bad_agent_file_is_refused_with_the_file_and_the_reason(tmp_path: Path, text: str, reason: str) -> None:
    write(tmp_path, "good.yaml", "name: Good\nsystem_prompt: fine\n")
    bad = write(tmp_path, "nova.yaml", text)
    with pytest.raises(PolicyFileError) as caught:
        load_agents(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"ORCH_AGENT_DIR: {bad}: ")
    assert reason in message


def test_duplicate_names_differing_in_case_are_refused(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", "name: Nova\nsystem_prompt: a\n")
    write(tmp_path, "b.yaml", "name: NOVA\nsystem_prompt: b\n")
    with pytest.raises(PolicyFileError, match=f"also used by {first}"):
        load_agents(tmp_path)


def test_missing_directory_and_unallowed_model_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="no such directory"):
        load_agents(tmp_path / "nope")
    write(tmp_path, "a.yaml", VALID + "model: big-model\n")
    with pytest.raises(PolicyFileError, match="'big-model' is not in ORCH_LLM_MODEL_ALLOWLIST"):
        load_agents(tmp_path, model_allowlist=["small-model"])
    assert load_agents(tmp_path, model_allowlist=["big-model"]).get("nova") is not None


def test_agent_from_model() -> None:
    assert agent_from_model("agent:holly") == "holly"
    assert agent_from_model("Agent:Holly") == "Holly"
    assert agent_from_model("agent:") == ""
    assert agent_from_model("qwen2.5:3b") is None
    assert agent_from_model(None) is None


def turn_for(messages: list[dict[str, Any]], agent: str | None = None) -> Turn:
    chat = ChatCompletionRequest.model_validate({"messages": messages})
    ctx = CallContext(principal=ANONYMOUS, request_id="r1", route="/test", agent=agent)
    request = ProviderRequest(model="default-model", messages=messages)
    return Turn(chat=chat, ctx=ctx, trace=Trace(None, "t1"), request=request, decisions=Decisions(request_id="t1"))


CALLER = [{"role": "system", "content": "caller rules"}, {"role": "user", "content": "hi"}]


def test_the_agent_prompt_comes_first_and_the_callers_system_prompt_is_kept(tmp_path: Path) -> None:
    write(tmp_path, "nova.yaml", VALID + "tools: [safe_calc, echo]\n")
    agent = load_agents(tmp_path).get("nova")
    assert agent is not None
    original = copy.deepcopy(CALLER)
    messages = copy.deepcopy(CALLER)
    turn = turn_for(messages)
    apply_agent(turn, agent, reason="requested")
    assert turn.request.messages == [{"role": "system", "content": "You are Nova."}, *original]
    assert messages == original  # the caller's list is not changed in place
    assert turn.gateway_tools == ["safe_calc", "echo"]
    assert turn.request.model == "default-model"
    assert turn.decisions.extra == {"agent": "Nova"}
    assert turn.decisions.model_decision is None


def test_replace_system_prompt_drops_the_callers_and_an_agent_model_is_used(tmp_path: Path) -> None:
    write(tmp_path, "nova.yaml", VALID + "replace_system_prompt: true\nmodel: nova-model\n")
    agent = load_agents(tmp_path).get("nova")
    assert agent is not None
    turn = turn_for([{"role": "developer", "content": "dev"}, *copy.deepcopy(CALLER)])
    apply_agent(turn, agent, reason="requested")
    assert turn.request.messages == [
        {"role": "system", "content": "You are Nova."},
        {"role": "user", "content": "hi"},
    ]
    assert turn.request.model == "nova-model"
    assert turn.decisions.model_decision == {"model": "nova-model", "reason": "agent_model", "agent": "Nova"}


async def test_the_stage_applies_only_an_addressed_agent_and_refuses_an_unknown_one() -> None:
    stage = AgentStage(load_agents(SHIPPED_AGENT_DIR))
    plain = turn_for(copy.deepcopy(CALLER))
    await stage.run(plain)
    assert plain.request.messages == CALLER and "agent" not in plain.decisions.extra
    addressed = turn_for(copy.deepcopy(CALLER), agent="holly")
    await stage.run(addressed)
    assert addressed.decisions.extra["agent"] == "Holly"
    assert addressed.request.messages[0]["content"].startswith("You are Holly")
    with pytest.raises(NotFound) as caught:
        await stage.run(turn_for(copy.deepcopy(CALLER), agent="nobody"))
    assert caught.value.param == "model" and caught.value.code == "agent_not_found"
