"""The memory gate end to end: the real server (``python -m app``), the official ``openai``
client, a REAL model (llama-server with SmolLM2-135M). The 135M model is weak, so what is asserted
is deterministic: the decisions, the stored entry, that the recalled memory reaches the model's
prompt (its prompt token count grows by the recall message; the receipt names the id) and that
erasing works; the model's wording is not asserted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.llm import MODEL_ALIAS, LlamaServer
from tests.e2e.server import E2E_TOKEN, LiveServer

pytestmark = pytest.mark.e2e

QUESTION = "What did I ask you to remember about deployments?"
SECRET = "ghp_" + "Zq8Yx7Wv6Ut5Sr4Qp3On2M"


@pytest.fixture(scope="module")
def memory_server(llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir: Path = tmp_path_factory.mktemp("memory")
    env = {
        "ORCH_LLM_ENABLED": "1",
        "ORCH_LLM_PROVIDER": "openai",
        "ORCH_OPENAI_BASE_URL": llama_server.openai_url,
        "ORCH_MODEL_CHAT": MODEL_ALIAS,
        "ORCH_RATE_LIMIT": "1000 per minute",
        "ORCH_LLM_TIMEOUT_SEC": "30",
        "ORCH_MEMORY_ENABLED": "1",
        "ORCH_MEMORY_CAPTURE_ENABLED": "1",
        "ORCH_MEMORY_WRITE_POLICY": "strict",
        "ORCH_MEMORY_RECALL_ENABLED": "1",
        "ORCH_TRUST_PANEL_ENABLED": "1",
    }
    with LiveServer(workdir, env) as server:
        yield server


def ask(client: openai.OpenAI, text: str) -> Any:
    return client.chat.completions.create(
        model=MODEL_ALIAS, messages=[{"role": "user", "content": text}], max_tokens=24, temperature=0
    )


def test_remember_recall_and_forget_with_a_real_model(memory_server: LiveServer) -> None:
    client = openai.OpenAI(base_url=memory_server.url + "/v1", api_key=E2E_TOKEN, max_retries=0, timeout=60)
    http = httpx.Client(base_url=memory_server.url, headers={"Authorization": f"Bearer {E2E_TOKEN}"}, timeout=30)

    before = ask(client, QUESTION)
    assert before.model_extra["memory_decision"]["reason"] == "deny:no_explicit_intent"

    stored = ask(client, "Please remember that deployments happen on Fridays at 10:00 after the standup.")
    decision = stored.model_extra["memory_decision"]
    assert decision["decision"] == "allow" and decision["reason"] == "allow:explicit_intent"
    [entry] = http.get("/v1/memory").json()["data"]
    assert entry["id"] == decision["candidate_id"]
    assert entry["content"] == "deployments happen on Fridays at 10:00 after the standup."

    after = ask(client, QUESTION)
    assert after.choices[0].message.content  # the model answered through the gateway
    assert before.usage is not None and after.usage is not None
    # The same question, now with the recall message in the prompt the model actually received.
    assert after.usage.prompt_tokens > before.usage.prompt_tokens + 10
    report = http.get(f"/v1/trust/trace/{after.model_extra['request_id']}").json()
    [recall] = [s for s in report["steps"] if s["step_type"] == "memory_recall"]
    assert recall["payload"]["ids"] == [entry["id"]]

    refused = ask(client, f"Remember that the deploy token is {SECRET}")
    assert refused.model_extra["memory_decision"]["reason"] == "deny:sensitive_content"

    assert http.delete("/v1/memory").json()["deleted"] == 1
    assert http.get("/v1/memory").json()["data"] == []
    assert ask(client, QUESTION).usage.prompt_tokens == before.usage.prompt_tokens  # nothing recalled now

    memory_server.stop()
    assert SECRET not in memory_server.logs()
    for path in memory_server.workdir.rglob("*.db*"):
        assert SECRET.encode() not in path.read_bytes(), path
