from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import LiveServer


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One demo-mode server for a module: default settings, a known token, a tight rate limit."""
    workdir: Path = tmp_path_factory.mktemp("live")
    with LiveServer(workdir, {"ORCH_RATE_LIMIT": "100 per minute", "ORCH_MAX_REQUEST_BYTES": "4096"}) as server:
        yield server
