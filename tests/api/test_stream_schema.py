"""Every streamed event of a chat completion is a ``ChatCompletionChunk``, the wire model that
describes it (app/schemas/chat.py); a whole answer is a ``ChatCompletion``."""

from __future__ import annotations

import httpx
import orjson

from app.schemas.chat import ChatCompletion, ChatCompletionChunk
from tests.api.test_chat import CHAT, HELLO, sse_events


async def test_each_streamed_event_is_a_chat_completion_chunk(client: httpx.AsyncClient) -> None:
    body = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", CHAT, json=body) as response:
        text = (await response.aread()).decode()
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(orjson.loads(event)) for event in events[:-1]]
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.get("role") == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


async def test_a_whole_answer_is_a_chat_completion(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=HELLO)
    assert response.status_code == 200
    completion = ChatCompletion.model_validate(response.json())
    assert completion.choices[0].message.role == "assistant"
