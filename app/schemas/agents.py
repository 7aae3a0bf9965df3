"""Response models of the agents resource (``/v1/agents``); chatting with one uses the chat models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class AgentSummary(BaseModel):
    name: str
    description: str
    tools: list[str]
    model: str | None
    metadata: dict[str, Any]


class AgentList(BaseModel):
    count: int
    agents: list[AgentSummary]


class AgentDetail(AgentSummary):
    system_prompt: str
    replace_system_prompt: bool
