"""Where the chat pipeline is assembled: the ordered stages and the generator.

The lifespan opens the services (memory, routing, tools, the provider) and calls these two
functions once; nothing else decides which stages run or in which order. Adding a stage is one
module implementing :class:`app.orchestrator.turn.Stage` plus one line in :func:`build_stages`.
"""

from __future__ import annotations

from app.agents.stage import AgentStage
from app.memory.service import MemoryService, MemoryStage
from app.orchestrator.service import ProviderGenerator
from app.orchestrator.tool_loop import ToolLoopGenerator
from app.orchestrator.turn import Generator, Stage
from app.providers.base import LLMProvider
from app.routing.setup import Routing
from app.settings import Settings
from app.tools.types import ToolRunner


def build_stages(settings: Settings, *, memory: MemoryService, routing: Routing) -> list[Stage]:
    """The stages every chat request runs through, in order.

    The memory gate comes first (it sees the caller's messages before anything is added, and its
    recall message is one an agent keeps); then the agent stage (an agent named by the route or
    by ``model: "agent:<name>"`` gets its prompt, tools and model); then routing, which is opened
    only in advanced mode or as a shadow (``routing.stage`` is None otherwise).
    """
    stages: list[Stage] = [MemoryStage(memory), AgentStage(routing.agents)]
    if routing.stage is not None:
        stages.append(routing.stage)
    return stages


def build_generator(settings: Settings, *, provider: LLMProvider, tool_runner: ToolRunner) -> Generator:
    """The provider, wrapped by the tool loop: the gateway's own tools that the model calls run
    there (a turn without gateway tools goes straight to the provider)."""
    return ToolLoopGenerator(ProviderGenerator(provider), tool_runner, max_rounds=settings.max_tool_rounds)
