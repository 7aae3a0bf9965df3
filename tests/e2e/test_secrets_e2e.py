"""Secrets against the real server (``python -m app`` under uvicorn, logging at DEBUG) in front of
a recording upstream on loopback: the canaries that got past the old scrubber, sent by chat, to
``POST /v1/memory`` and through a tool, are in none of the files the process wrote (databases
with their -wal), its log output, /metrics, the receipts export, or what recall sent upstream."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.server import E2E_TOKEN, LiveServer
from tests.fakes.upstream import FakeUpstream, fake_upstream

pytestmark = pytest.mark.e2e

# (what a caller pastes, the part that must never be kept or forwarded)
CANARIES = [
    ("aws_secret_access_key=wJalrXUtnFEMIK7MDENGbPxRfiCY", "wJalrXUtnFEMIK7MDENGbPxRfiCY"),
    ("DB_PASSWORD=Hunter2Xyz99", "Hunter2Xyz99"),
    ("GOOGLE_CLIENT_SECRET=abcdef123", "abcdef123"),
    ('{"password": "Qm7Kp2Lx9Wz4"}', "Qm7Kp2Lx9Wz4"),
    ("my password is Vb3Nm8Qw1Ty6", "Vb3Nm8Qw1Ty6"),
    ("Authorization: Basic YWRtaW46c2VjcmV0cHc=", "YWRtaW46c2VjcmV0cHc="),
    ("the deploy db is postgres://app:Rt5Yu8Io2Pa@db.internal/app", "Rt5Yu8Io2Pa"),
]
KEPT = "Please remember that the deploy password policy needs twelve characters."
FOLLOW_UP = "What is the deploy password policy?"


class _Upstream:
    """A FakeUpstream served from its own event loop in a thread (the test itself is synchronous)."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.fake: FakeUpstream | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        async with fake_upstream() as fake:
            self.fake = fake
            self.ready.set()
            while not self.stop.is_set():
                await asyncio.sleep(0.05)

    def __enter__(self) -> FakeUpstream:
        self.thread.start()
        assert self.ready.wait(10)
        assert self.fake is not None
        return self.fake

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with _Upstream() as fake:
        yield fake


def _files(root: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace") for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".log"
    )


def test_canaries_reach_no_file_log_metric_export_or_recall(upstream: FakeUpstream, tmp_path: Path) -> None:
    env = {
        "ORCH_LLM_ENABLED": "1",
        "ORCH_LLM_PROVIDER": "openai",
        "ORCH_OPENAI_BASE_URL": upstream.url,
        "ORCH_RATE_LIMIT": "1000 per minute",
        "ORCH_MEMORY_ENABLED": "1",
        "ORCH_MEMORY_CAPTURE_ENABLED": "1",
        "ORCH_MEMORY_WRITE_POLICY": "capture_only",
        "ORCH_MEMORY_RECALL_ENABLED": "1",
        "ORCH_TRUST_PANEL_ENABLED": "1",
        "ORCH_LOG_LEVEL": "DEBUG",
    }
    seen: dict[str, str] = {}
    with LiveServer(tmp_path, env) as server:
        http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {E2E_TOKEN}"}, timeout=30)

        def chat(text: str) -> dict[str, Any]:
            answer = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": text}]})
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        assert http.post("/v1/memory", json={"content": KEPT}).status_code == 201
        for text, _ in CANARIES:
            message = f"Remember this for the deploy: {text} (from the runbook)"
            assert chat(message)["memory_decision"]["reason"] == "deny:sensitive_content", text
            posted = http.post("/v1/memory", json={"content": message})
            assert posted.json()["error"]["code"] == "sensitive_content", text
            echoed = http.post("/v1/tools/execute", json={"name": "echo", "args": {"message": message}})
            assert echoed.status_code == 200, echoed.text
            seen["tool output"] = seen.get("tool output", "") + echoed.text
        chat(FOLLOW_UP)
        seen["memory api"] = http.get("/v1/memory").text
        seen["metrics"] = http.get("/metrics").text
        seen["receipts export"] = http.get("/v1/trust/ledger").text
        seen["files while running"] = _files(tmp_path)
        running_files = " ".join(p.name for p in tmp_path.rglob("*"))
    seen["files after stop"] = _files(tmp_path)
    seen["log"] = server.logs()
    recall = [m["content"] for r in upstream.requests for m in r["messages"] if m["role"] == "system"]
    assert any("deploy password policy" in text for text in recall)  # recall ran
    seen["upstream: recall"] = "\n".join(recall)
    seen["upstream: follow-up"] = orjson.dumps(upstream.requests[-1]).decode()
    assert seen["log"].count("\n") > 3 * len(CANARIES)  # one access line per request at least
    assert "memory.db-wal" in running_files  # the WAL files were read too
    for place, text in seen.items():
        for _, secret in CANARIES:
            assert secret not in text and secret.lower() not in text.lower(), (place, secret)
