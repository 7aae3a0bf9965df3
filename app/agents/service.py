"""The agents service: what every face (HTTP routes, console, CLI, MCP server) calls to list the
agents and find one; chatting with an agent is the chat pipeline's, with the agent named in the
call context."""

from __future__ import annotations

from app.agents.registry import Agent, AgentRegistry
from app.errors import NotFound
from app.schemas.agents import AgentDetail, AgentList, AgentSummary


class AgentsService:
    """The agents loaded at startup (``policies/agents/*.yaml`` or ORCH_AGENT_DIR)."""

    def __init__(self, registry: AgentRegistry) -> None:
        self.registry = registry

    def list(self) -> AgentList:
        """Every agent, in file-name order, without system prompts."""
        agents = self.registry.all()
        return AgentList(count=len(agents), agents=[AgentSummary(**agent.summary()) for agent in agents])

    def agent(self, name: str) -> Agent:
        """The agent called ``name`` (any case); 404 ``agent_not_found`` when there is none."""
        found = self.registry.get(name)
        if found is None:
            raise NotFound(f"There is no agent named '{name}'.", param="name", code="agent_not_found")
        return found

    def detail(self, name: str) -> AgentDetail:
        """One agent, with its system prompt."""
        return AgentDetail(**self.agent(name).detail())
