"""Property (hypothesis): a message carrying a secret of any kind the scrubber knows, embedded in
varied text, sent as a chat message or posted to /v1/memory, never reaches the memory store, the
receipts (read back through the trace store) or the logs."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.lifespan import AppState
from app.main import create_app
from tests.conftest import build_settings, running
from tests.secrets_strategies import message_with_secret

ON = {"memory_enabled": True, "memory_capture_enabled": True, "memory_recall_enabled": True}


async def _exercise(cases: list[tuple[str, str, str]], policy: str) -> str:
    """Send every case through the app; return everything that was persisted (store + receipts)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(build_settings(Path(tmp), memory_write_policy=policy, **ON))
        async with running(app) as client:
            state: AppState = app.state.orch
            for message, _, kind in cases:
                chat = await client.post(
                    "/v1/chat/completions", json={"messages": [{"role": "user", "content": message}]}
                )
                assert chat.status_code == 200, chat.text
                assert chat.json()["memory_decision"]["reason"] == "deny:sensitive_content", kind
                posted = await client.post("/v1/memory", json={"content": message})
                assert posted.status_code == 400 and posted.json()["error"]["code"] == "sensitive_content", kind
            assert (await client.get("/v1/memory")).json()["data"] == []
            assert state.memory.store is not None and await state.memory.store.count() == 0
            await state.tracer.flush()
            assert state.tracer.store is not None
            steps = await state.tracer.store.db.fetch_all("SELECT step_type, step_json FROM trace_steps")
            reasons = [row["step_json"] for row in steps if row["step_type"] == "memory_decision"]
            assert len(reasons) == 2 * len(cases) and all("deny:sensitive_content" in r for r in reasons)
        persisted = [row["step_json"] for row in steps]
        for path in Path(tmp).iterdir():  # every database file (and WAL) as raw bytes
            persisted.append(path.read_bytes().decode("utf-8", "replace"))
        return "\n".join(persisted)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cases=st.lists(message_with_secret(), min_size=3, max_size=6), policy=st.sampled_from(["strict", "capture_only"])
)
def test_no_secret_reaches_the_store_the_receipts_or_the_logs(
    cases: list[tuple[str, str, str]], policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        persisted = asyncio.run(_exercise(cases, policy))
    logs = "\n".join(record.getMessage() + " " + str(record.__dict__) for record in caplog.records)
    assert caplog.records  # the access log lines were captured, so the check below means something
    for _, secret, kind in cases:
        assert secret not in persisted, kind
        assert secret not in logs, kind
