"""A real upstream that sends tool calls of the wrong shape, behind the real server (uvicorn), on the
agent path (Holly's tool loop): 502 ``provider_bad_response`` with the request id, whole and
streamed (a real status before the first byte, an in-band error after it), never a 500."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.server import E2E_TOKEN, LiveServer
from tests.fakes.upstream import Reply, chunk, completion, fake_upstream

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "What is 6*7?"}]


def bad_calls() -> list[dict[str, Any]]:
    return [{"id": "call_1", "type": "function", "function": "safe_calc"}]  # function as a string


async def test_malformed_tool_calls_are_502_with_the_request_id_whole_and_streamed(tmp_path: Path) -> None:
    whole = Reply(body=completion("", message={"content": None, "tool_calls": bad_calls()}, finish_reason="tool_calls"))
    name_int = [{"index": 0, "id": "c", "type": "function", "function": {"name": 5, "arguments": "{}"}}]
    before = Reply(stream=[chunk({"role": "assistant", "content": None}), chunk({"tool_calls": name_int})])
    index_list = [{"index": [0], "id": "c", "type": "function", "function": {"name": "safe_calc"}}]
    after = Reply(stream=[chunk({"content": "Let me see. "}), chunk({"tool_calls": index_list})], delay=0.05)
    async with fake_upstream(whole, before, after) as fake:
        env = {
            "ORCH_LLM_ENABLED": "1",
            "ORCH_LLM_PROVIDER": "openai",
            "ORCH_OPENAI_BASE_URL": fake.url,
            "ORCH_MODEL_CHAT": "fake-model",
        }
        server = LiveServer(tmp_path, env)
        await asyncio.to_thread(server.start)
        try:
            client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=E2E_TOKEN, max_retries=0, timeout=10)
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(model="agent:holly", messages=HI)  # type: ignore[arg-type]
            assert caught.value.status_code == 502
            body = caught.value.response.json()
            assert body["error"]["code"] == "provider_bad_response"
            assert "tool_calls[0].function is a string" in body["error"]["message"]
            assert body["request_id"]

            with pytest.raises(openai.APIStatusError) as streamed:
                await client.chat.completions.create(model="agent:holly", messages=HI, stream=True)  # type: ignore[arg-type]
            assert streamed.value.status_code == 502
            body = streamed.value.response.json()
            assert "tool_calls[0].function.name is a number" in body["error"]["message"]
            assert body["request_id"]

            # After the first byte: an in-band error event with the request id, then [DONE].
            async with (
                httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {E2E_TOKEN}"}) as raw,
                raw.stream(
                    "POST", "/v1/chat/completions", json={"model": "agent:holly", "messages": HI, "stream": True}
                ) as response,
            ):
                assert response.status_code == 200
                text = (await response.aread()).decode()
            events = [block.removeprefix("data: ") for block in text.strip().split("\n\n")]
            assert events[-1] == "[DONE]"
            error = json.loads(events[-2])
            assert error["error"]["code"] == "provider_bad_response"
            assert "tool_calls[0].index is an array" in error["error"]["message"]
            assert error["request_id"] == json.loads(events[0])["request_id"]
            assert "unhandled error" not in server.logs() and "stream failed" not in server.logs()
        finally:
            await asyncio.to_thread(server.stop)
