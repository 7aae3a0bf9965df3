"""The agent stage: a turn addressed to an agent gets its system prompt, tools and model."""

from __future__ import annotations

from typing import Any

from app.agents.registry import Agent, AgentRegistry
from app.errors import NotFound
from app.orchestrator.turn import Turn

AGENT_MODEL_PREFIX = "agent:"  # `model: "agent:holly"` on /v1/chat/completions addresses an agent
_SYSTEM_ROLES = frozenset({"system", "developer"})


def agent_from_model(model: str | None) -> str | None:
    """The agent named by an ``agent:<name>`` model, else None."""
    if model and model[:6].lower() == AGENT_MODEL_PREFIX:
        return model[len(AGENT_MODEL_PREFIX) :].strip()
    return None


def apply_agent(turn: Turn, agent: Agent, *, reason: str) -> None:
    """Give the turn the agent's system prompt, tools and model, and record it in the receipt."""
    messages: list[dict[str, Any]] = turn.request.messages
    if agent.replace_system_prompt:
        # The memory gate's recall message is the gateway's own, not the caller's prompt: it stays.
        messages = [m for m in messages if m.get("role") not in _SYSTEM_ROLES or m is turn.memory_message]
    # A new list: the caller's request object is never changed in place.
    turn.request.messages = [{"role": "system", "content": agent.system_prompt}, *messages]
    turn.gateway_tools = list(agent.tools)
    if agent.model:
        turn.request.model = agent.model
        turn.decisions.model_decision = {"model": agent.model, "reason": "agent_model", "agent": agent.name}
    turn.decisions.extra["agent"] = agent.name
    turn.trace.step(
        "agent",
        {
            "agent": agent.name,
            "reason": reason,
            "replaced_system_prompt": agent.replace_system_prompt,
            "tools": list(agent.tools),
            "model": turn.request.model,
        },
    )


class AgentStage:
    """Applies the agent the caller addressed (``/v1/agents/{name}/chat`` or ``model: "agent:<name>"``)."""

    name = "agent"

    def __init__(self, agents: AgentRegistry) -> None:
        self.agents = agents

    async def run(self, turn: Turn) -> None:
        requested = turn.ctx.agent
        if requested is None:
            return
        agent = self.agents.get(requested)
        if agent is None:
            raise NotFound(
                f"There is no agent named '{requested[:64]}' (see GET /v1/agents).",
                param="model",
                code="agent_not_found",
            )
        apply_agent(turn, agent, reason="requested")
