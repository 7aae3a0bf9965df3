"""Agents: named personas defined as YAML files in ``ORCH_AGENT_DIR`` (docs/agents.md).

An agent is a system prompt, the tools the gateway offers it, optionally its own model, and free
metadata. Every file is validated at startup; one bad file stops the service with the file and
the reason (the original skipped bad files silently, and re-read the directory on every request).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.policy_files import PolicyFileError, describe, read_yaml_mapping

FLAG = "ORCH_AGENT_DIR"
AGENT_FILE_GLOB = "*.y*ml"  # the same set the policy snapshot hashes
MAX_AGENTS = 1000
MAX_SYSTEM_PROMPT_CHARS = 32_000  # a persona, not a document: keeps every agent turn's prompt bounded
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"  # usable in a URL path and in "agent:<name>"
TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class Agent(BaseModel):
    """One agent file. Unknown keys are refused, so a typo is an error instead of a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=2000)
    system_prompt: str = Field(min_length=1, max_length=MAX_SYSTEM_PROMPT_CHARS)
    # Replace the caller's system (and developer) messages instead of adding the agent's before them.
    replace_system_prompt: bool = False
    tools: list[str] = Field(default_factory=list, max_length=64)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("system_prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, value: list[str]) -> list[str]:
        for tool in value:
            if not TOOL_NAME.match(tool):
                raise ValueError(f"{tool!r} is not a tool name (letters, digits, '_', '.', '-')")
        if len(set(value)) != len(value):
            raise ValueError("a tool is listed twice")
        return value

    @property
    def key(self) -> str:
        return self.name.lower()

    def summary(self) -> dict[str, Any]:
        """The listing shape (no system prompt)."""
        return {
            "name": self.name,
            "description": self.description,
            "tools": list(self.tools),
            "model": self.model,
            "metadata": dict(self.metadata),
        }

    def detail(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "system_prompt": self.system_prompt,
            "replace_system_prompt": self.replace_system_prompt,
        }


class AgentRegistry:
    """The agents loaded at startup, by lower-cased name, in file-name order."""

    def __init__(
        self, agents: list[Agent], directory: Path | None = None, files: dict[str, Path] | None = None
    ) -> None:
        self.directory = directory
        self._ordered = list(agents)
        self._by_key = {agent.key: agent for agent in agents}
        self._files = files or {}

    def source(self, agent: Agent) -> str:
        """Where the agent came from (its file), for error messages."""
        path = self._files.get(agent.key)
        return str(path) if path is not None else f"agent {agent.name!r}"

    def get(self, name: str) -> Agent | None:
        """Case-insensitive lookup."""
        return self._by_key.get(name.lower())

    def all(self) -> list[Agent]:
        return list(self._ordered)

    def __len__(self) -> int:
        return len(self._ordered)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_key


def load_agents(directory: Path, *, model_allowlist: Collection[str] = ()) -> AgentRegistry:
    """Read and validate every agent file in ``directory``; raise :class:`PolicyFileError` on the first problem."""
    if not directory.is_dir():
        raise PolicyFileError(f"{FLAG}: {directory}: no such directory")
    files = sorted(path for path in directory.glob(AGENT_FILE_GLOB) if path.is_file())
    if len(files) > MAX_AGENTS:
        raise PolicyFileError(f"{FLAG}: {directory}: more than {MAX_AGENTS} agent files")
    agents: list[Agent] = []
    seen: dict[str, Path] = {}
    for path in files:
        data = read_yaml_mapping(path, flag=FLAG)
        try:
            agent = Agent.model_validate(data)
        except ValidationError as exc:
            raise PolicyFileError(f"{FLAG}: {path}: {describe(exc)}") from None
        if agent.key in seen:
            raise PolicyFileError(f"{FLAG}: {path}: the agent name {agent.name!r} is also used by {seen[agent.key]}")
        if agent.model and model_allowlist and agent.model not in model_allowlist:
            raise PolicyFileError(f"{FLAG}: {path}: model {agent.model!r} is not in ORCH_LLM_MODEL_ALLOWLIST")
        seen[agent.key] = path
        agents.append(agent)
    return AgentRegistry(agents, directory, seen)
