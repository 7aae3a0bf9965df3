"""The demo provider honours what a client's first structured-output and tools tries send, through
the official `openai` client against the real service: `parse` with a pydantic model, tools with
`tool_choice`, `max_tokens`, whole and streamed."""

from __future__ import annotations

import json
from datetime import date
from enum import StrEnum
from typing import Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from app.providers.demo import DEMO_MODEL
from tests.e2e.server import LiveServer
from tests.e2e.test_openai_client import client_for

pytestmark = pytest.mark.e2e


class Colour(StrEnum):
    red = "red"
    green = "green"


class Step(BaseModel):
    explanation: str
    output: str


class MathReasoning(BaseModel):
    steps: list[Step]
    final_answer: str
    confidence: float = Field(ge=0, le=1)
    colour: Colour
    kind: Literal["proof", "sketch"]
    due: date | None
    tags: list[str] = Field(min_length=2, max_length=3)
    count: int = Field(gt=10, multiple_of=5)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 2},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}


def test_parse_with_a_pydantic_model(live_server: LiveServer) -> None:
    completion = client_for(live_server).chat.completions.parse(
        model=DEMO_MODEL,
        messages=[{"role": "user", "content": "solve 8x + 7 = -23"}],
        response_format=MathReasoning,
    )
    message = completion.choices[0].message
    assert isinstance(message.parsed, MathReasoning)
    assert message.parsed.steps and message.parsed.count > 10 and message.parsed.count % 5 == 0
    assert completion.choices[0].finish_reason == "stop"


def test_parse_streamed(live_server: LiveServer) -> None:
    client = client_for(live_server)
    with client.chat.completions.stream(
        model=DEMO_MODEL, messages=[{"role": "user", "content": "solve it"}], response_format=MathReasoning
    ) as stream:
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, MathReasoning)


def test_json_object(live_server: LiveServer) -> None:
    completion = client_for(live_server).chat.completions.create(
        model=DEMO_MODEL,
        messages=[{"role": "user", "content": "answer in JSON"}],
        response_format={"type": "json_object"},
    )
    answer = json.loads(completion.choices[0].message.content or "")
    assert isinstance(answer, dict) and answer["you_said"] == "answer in JSON"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_choice_required_calls_a_tool_with_valid_arguments(live_server: LiveServer, stream: bool) -> None:
    client = client_for(live_server)
    messages = [{"role": "user", "content": "What should I wear tomorrow?"}]
    kwargs = {"model": DEMO_MODEL, "messages": messages, "tools": [WEATHER, TIME], "tool_choice": "required"}
    if stream:
        with client.chat.completions.stream(**kwargs) as events:  # type: ignore[arg-type]
            completion = events.get_final_completion()
    else:
        completion = client.chat.completions.create(**kwargs)  # type: ignore[arg-type]
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"  # none is named: the first tool
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])  # type: ignore[index]


def test_streamed_tool_call_deltas_are_shaped_as_openai_sends_them(live_server: LiveServer) -> None:
    stream = client_for(live_server).chat.completions.create(
        model=DEMO_MODEL,
        messages=[{"role": "user", "content": "time please"}],
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        stream=True,
    )
    deltas = [chunk.choices[0] for chunk in stream if chunk.choices]
    calls = [choice.delta.tool_calls for choice in deltas if choice.delta.tool_calls]
    assert len(calls) > 1
    head = calls[0][0]
    assert head.index == 0 and head.id and head.type == "function" and head.function
    assert head.function.name == "get_time" and head.function.arguments == ""
    rest = [call[0] for call in calls[1:]]
    assert all(call.index == 0 and call.id is None and call.function for call in rest)
    arguments = "".join(call.function.arguments or "" for call in rest if call.function)
    assert "zone" in json.loads(arguments)
    assert deltas[-1].finish_reason == "tool_calls"


def test_auto_calls_the_tool_the_message_names_then_answers_its_result(live_server: LiveServer) -> None:
    client = client_for(live_server)
    messages: list[dict[str, object]] = [{"role": "user", "content": "Use get_weather for Lisbon"}]
    first = client.chat.completions.create(model=DEMO_MODEL, messages=messages, tools=[WEATHER, TIME])  # type: ignore[arg-type]
    [call] = first.choices[0].message.tool_calls or []
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "get_weather" and arguments["city"] == "for Lisbon"
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"},
    ]
    second = client.chat.completions.create(model=DEMO_MODEL, messages=messages, tools=[WEATHER, TIME])  # type: ignore[arg-type]
    assert second.choices[0].finish_reason == "stop"
    assert "sunny, 24 C" in (second.choices[0].message.content or "")
    plain = client.chat.completions.create(
        model=DEMO_MODEL,
        messages=[{"role": "user", "content": "hello"}],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert plain.choices[0].message.tool_calls is None


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_truncates_with_finish_reason_length(live_server: LiveServer, field: str) -> None:
    client = client_for(live_server)
    messages = [{"role": "user", "content": "tell me a long story"}]
    whole = client.chat.completions.create(model=DEMO_MODEL, messages=messages, **{field: 5})  # type: ignore[call-overload]
    assert whole.choices[0].finish_reason == "length"
    assert len((whole.choices[0].message.content or "").split()) == 5
    assert whole.usage is not None and whole.usage.completion_tokens == 5
    streamed = client.chat.completions.create(model=DEMO_MODEL, messages=messages, stream=True, **{field: 5})  # type: ignore[call-overload]
    chunks = [chunk.choices[0] for chunk in streamed if chunk.choices]
    assert "".join(choice.delta.content or "" for choice in chunks) == whole.choices[0].message.content
    assert chunks[-1].finish_reason == "length"


def test_requests_the_demo_cannot_honour_are_400_naming_the_field(live_server: LiveServer) -> None:
    client = client_for(live_server)
    user = [{"role": "user", "content": "x"}]
    cases = [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [WEATHER]}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "s",
                        "schema": {
                            "type": "object",
                            "properties": {"code": {"type": "string", "pattern": "^[0-9]{3}-[a-z]{9}$"}},
                        },
                    },
                }
            },
            "response_format.json_schema.schema",
        ),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=DEMO_MODEL, messages=user, **extra)  # type: ignore[call-overload]
        assert refused.value.body["param"] == param, extra  # type: ignore[index]
