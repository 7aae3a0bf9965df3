"""The e2e suite's llama.cpp server needs no build: scripts/run_llama_server.sh, as the suite runs
it, starts llama.cpp's server from the prebuilt wheel with an empty build cache, with the flags
the suite passes (a chat template file included), and refuses a flag it does not know."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.llm import model_path
from tests.e2e.server import ROOT, ManagedProcess, free_port

pytestmark = pytest.mark.e2e

# ChatML, as SmolLM2's own template writes it: enough for the server to render a conversation.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_the_server_starts_from_an_empty_cache_with_the_suites_flags(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "LLAMA_SERVER"}
    env.update({"ORCH_CACHE_DIR": str(cache), "LLAMA_SERVER_PYTHON": sys.executable})
    command = ["bash", str(ROOT / "scripts" / "run_llama_server.sh"), str(model_path()), str(port)]
    server = ManagedProcess(
        [*command, "--chat-template-file", str(template)],
        port=port,
        cwd=ROOT,
        env=env,
        log_path=tmp_path / "llama-server.log",
    )
    server.start(timeout=60)  # a build from source would take 9-16 minutes here
    try:
        reply = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": "test-model", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == "test-model"
        models = httpx.get(server.url + "/v1/models", timeout=10).json()
        assert [model["id"] for model in models["data"]] == ["test-model"]
    finally:
        server.stop()
    assert list(cache.iterdir()) == []  # nothing was built or downloaded


def test_an_unknown_flag_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "llama_server.py"), "-m", "model.gguf", "--flash-attn-everywhere"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unrecognized arguments: --flash-attn-everywhere" in done.stderr


def test_version_names_the_wheel() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "llama_server.py"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("llama.cpp server from xllamacpp 2026.10.11549")
