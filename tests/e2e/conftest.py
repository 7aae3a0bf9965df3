from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.llm import LlamaServer, OllamaFrontProcess, llama_server_command, model_path
from tests.e2e.server import LiveServer


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One demo-mode server for a module: default settings, a known token, a tight rate limit."""
    workdir: Path = tmp_path_factory.mktemp("live")
    with LiveServer(workdir, {"ORCH_RATE_LIMIT": "100 per minute", "ORCH_MAX_REQUEST_BYTES": "4096"}) as server:
        yield server


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama-server with the real test model (SmolLM2-135M) for the session; fails if make test-deps was not run."""
    server_command, model = llama_server_command(), model_path()
    with LlamaServer(tmp_path_factory.mktemp("llama"), server=server_command, model=model) as server:
        yield server


@pytest.fixture(scope="session")
def ollama_front(llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaFrontProcess]:
    """Ollama's native API (tests/fakes/ollama_front.py) over the session's llama-server."""
    with OllamaFrontProcess(tmp_path_factory.mktemp("ollama-front"), llama_server.openai_url) as front:
        yield front
