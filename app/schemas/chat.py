"""Wire models for ``/v1/chat/completions``, named as the OpenAI API names them.

The request model validates what the gateway itself relies on (roles, message shapes, stream
flags) and keeps every other field (``extra="allow"``) so that it can be forwarded to the upstream
untouched. Validation is strict, as the OpenAI API's is: the body is forwarded as sent, so a
``"stream": "yes"`` or ``"max_tokens": "10"`` that lax validation would coerce is refused (400)
instead of reaching the model server in a shape it did not expect. Responses are plain dicts
serialised with orjson on the hot path; the response models here document the shape in the
OpenAPI schema (``/docs``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.providers.base import MAX_CHOICES

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]

# The most output tokens a request may ask for. Above any model's context window today (the largest
# are about a million tokens), and it fits the 32-bit integers upstreams parse the field into: a
# 2**63 was forwarded as sent, for the model server to overflow or reject in its own way.
MAX_OUTPUT_TOKENS = 1_048_576


class ChatMessage(BaseModel):
    """One message. ``content`` is text or a list of content parts; extra keys are kept."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text: the string content, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "\n".join(str(part.get("text", "")) for part in self.content if part.get("type") in (None, "text"))


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat request. Unknown fields are accepted and forwarded to the provider."""

    # The example (the playground's default body) names no model: the default one answers.
    model_config = ConfigDict(
        extra="allow",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "messages": [
                        {"role": "system", "content": "You are a concise assistant."},
                        {"role": "user", "content": "In one sentence: what does a reverse proxy do?"},
                    ],
                    "max_tokens": 200,
                    "stream": False,
                }
            ]
        },
    )

    model: str | None = Field(default=None, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES, description="How many choices (at most 8).")
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


class Choice(BaseModel):
    index: int
    message: ChatCompletionMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None = Field(default=None, description="The upstream's, when asked for.")


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, Any] | None = Field(default=None, description="The upstream's, when it sent them.")
    completion_tokens_details: dict[str, Any] | None = Field(
        default=None, description="The upstream's, when it sent them."
    )


class ChatCompletion(BaseModel):
    """A ``chat.completion`` plus the orchestrator's decision fields."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = Field(default=None, description="The upstream's, when it sent one.")
    request_id: str = Field(description="The receipt (trace) id of this request.")
    memory_decision: dict[str, Any] | None = None
    route_decision: dict[str, Any] | None = None
    model_decision: dict[str, Any] | None = None
    tool_result: dict[str, Any] | None = None
    # Agents and routing (docs/agents.md, docs/routing.md): present only when they apply.
    agent: str | None = Field(default=None, description="The agent that answered (agent chats).")
    intent_decision: dict[str, Any] | None = Field(
        default=None, description="Routing details, with ?debug=1 or ORCH_INTENT_DECISION_EXPOSE=1."
    )


class ChunkChoice(BaseModel):
    index: int
    delta: dict[str, Any]
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(BaseModel):
    """One SSE ``data:`` event of a streamed completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
