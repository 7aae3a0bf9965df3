"""The chat pipeline: from a validated request to a completion, whole or streamed.

Routers call one method here. The contract the stages and the generator implement (:class:`Turn`,
:class:`Stage`, :class:`Generator` ...) is in :mod:`app.orchestrator.turn`; the stages are
assembled in :mod:`app.orchestrator.stages`. This module runs them: it opens the receipt, runs the
stages in order, asks the generator, and owns ids, the wire shapes and the orchestrator fields
(``request_id``, ``memory_decision``, ``route_decision``, ``model_decision``, ``tool_result``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.errors import CallerLeft, InternalError, InvalidRequest, OrchestratorError
from app.ids import new_id
from app.observability.logging import get_logger
from app.observability.metrics import Metrics
from app.orchestrator.disconnect import CancelOnLeave
from app.orchestrator.sse import DONE, ChunkWriter
from app.orchestrator.turn import CallContext, Decisions, Generator, Stage, Turn
from app.policies import PolicySnapshot
from app.providers.base import Completion, LLMProvider, ModelCard, ProviderRequest, StreamDelta, Usage
from app.receipts.steps import LlmProviderStep
from app.receipts.tracer import Trace, Tracer
from app.schemas.chat import ChatCompletionRequest

log = get_logger("orchestrator")

# Request fields the gateway consumes itself; everything else is forwarded to the provider.
_GATEWAY_FIELDS = frozenset({"model", "messages", "stream", "stream_options"})
_WORDS = re.compile(r"\S+\s*|\s+")  # a ready answer is streamed word by word


class ProviderGenerator:
    """The plain generator: ask the provider once."""

    def __init__(self, provider: LLMProvider) -> None:
        self.provider = provider

    def check(self, turn: Turn) -> None:
        return None  # the provider judges the request itself

    async def complete(self, turn: Turn) -> Completion:
        return await self.provider.complete(turn.request)

    def stream(self, turn: Turn) -> AsyncIterator[StreamDelta]:
        return self.provider.stream(turn.request)


def new_completion_id() -> str:
    return "chatcmpl-" + new_id()


MODELS_CACHE_SECONDS = 10.0  # /v1/models asks the upstream at most this often


class Orchestrator:
    """Runs chat requests through the stages and the generator."""

    def __init__(
        self,
        *,
        provider: LLMProvider,
        default_model: str,
        model_allowlist: list[str],
        tracer: Tracer,
        policies: PolicySnapshot,
        max_output_chars: int = 0,
        stages: Sequence[Stage] = (),
        generator: Generator | None = None,
        request_fields: Mapping[str, Any] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.provider = provider
        # A stream that fails after its 200 went out: the status says nothing, so it is counted here.
        self.stream_errors = (metrics or Metrics()).counter(
            "orch_stream_errors_total", "Streams that ended with an in-band error after their 200.", ("code",)
        )
        self.tracer = tracer
        self.policies = policies
        self.default_model = default_model
        self.model_allowlist = frozenset(model_allowlist)
        self.max_output_chars = max_output_chars  # <= 0: unlimited
        self.stages = list(stages)
        self.generator: Generator = generator or ProviderGenerator(provider)
        # Decisions that are the same for every request (the memory gate when memory is off) are
        # recorded on the request step: the receipt has them without a row of their own.
        self.request_fields = dict(request_fields or {})
        self._models: list[ModelCard] | None = None
        self._models_at = 0.0

    async def list_models(self) -> list[ModelCard]:
        """The provider's models a request may name (``ORCH_LLM_MODEL_ALLOWLIST``), cached briefly
        (a model list changes rarely, clients ask often)."""
        now = time.monotonic()
        if self._models is None or now - self._models_at > MODELS_CACHE_SECONDS:
            models = await self.provider.list_models()
            allowed = self.model_allowlist
            self._models = [model for model in models if model.id in allowed] if allowed else models
            self._models_at = now
        return self._models

    def check_model(self, requested: str) -> str:
        if self.model_allowlist and requested not in self.model_allowlist:
            raise InvalidRequest(
                f"The model '{requested}' is not allowed here (ORCH_LLM_MODEL_ALLOWLIST).",
                param="model",
                code="model_not_allowed",
            )
        return requested

    def _open_trace(self, chat: ChatCompletionRequest, ctx: CallContext) -> Trace:
        # The policy snapshot hash rides on the request step: one row less per request. (A tool
        # execution records its own `policy_snapshot` step with the decision.)
        extra: dict[str, Any] = {"policy_hash": self.policies.loaded_hash, **self.request_fields}
        if ctx.agent:
            extra["agent"] = ctx.agent
        return self.tracer.begin(
            route=ctx.route, request_id=ctx.request_id, principal=ctx.principal.id, stream=chat.stream, extra=extra
        )

    async def _prepare(self, chat: ChatCompletionRequest, raw: dict[str, Any], ctx: CallContext) -> Turn:
        """Open the receipt and run the stages. On failure the receipt records it and ends."""
        trace = self._open_trace(chat, ctx)
        decisions = Decisions(request_id=trace.id)
        turn: Turn | None = None
        try:
            options = {key: value for key, value in raw.items() if key not in _GATEWAY_FIELDS}
            request = ProviderRequest(
                model=self.check_model(chat.model) if chat.model else self.default_model,
                messages=raw["messages"],
                options=options,
                include_usage=bool(chat.stream_options and chat.stream_options.include_usage),
            )
            turn = Turn(chat=chat, ctx=ctx, trace=trace, request=request, decisions=decisions)
            for stage in self.stages:
                await stage.run(turn)
                if turn.answer is not None:
                    break
            if (chat.n or 1) > 1 and (turn.answer is not None or turn.gateway_tools):
                # One answer, not n: a stage's ready answer, or a tool conversation the gateway runs
                # (each choice would run the tools again).
                raise InvalidRequest(
                    "n must be 1 here: this request is answered by the gateway's tools or routing, "
                    "which give one answer.",
                    param="n",
                    code="unsupported_n",
                )
            if turn.answer is None:
                self.generator.check(turn)
            hooks, turn.after_stages, turn.on_abort = turn.after_stages, [], []
            for hook in hooks:
                await hook()
            return turn
        except BaseException as exc:
            if turn is not None:
                for abort in turn.on_abort:
                    abort()
            self._failed(trace, exc, decisions)
            trace.end()
            named = self._named(trace, exc)
            if named is not exc:
                raise named from exc
            raise

    @staticmethod
    def _named(trace: Trace, error: BaseException) -> BaseException:
        """What the caller gets for a failure: ours as it is, with the request id; anything else (a
        bug) logged with its traceback and answered as a 500 that still names the request."""
        if isinstance(error, OrchestratorError | CallerLeft) or not isinstance(error, Exception):
            return error  # (the caller left, a cancellation, or a generator closed: goes on as it is)
        log.error("chat request failed", exc_info=error, extra={"request_id": trace.id})
        return InternalError(extra={"request_id": trace.id})

    @staticmethod
    def _failed(trace: Trace, error: BaseException, decisions: Decisions | None = None) -> None:
        """Record the failure in the receipt, and tell the caller which receipt it is (and what the
        memory gate decided: a memory may be stored even when the model then failed)."""
        if isinstance(error, CallerLeft):
            return  # not a failure: the receipt's llm_provider step says client_disconnected
        if isinstance(error, OrchestratorError):
            trace.step(
                "error", {"status": error.status, "type": error.type, "code": error.code, "message": error.message}
            )
            error.extra.setdefault("request_id", trace.id)
            if decisions is not None and decisions.memory_decision is not None:
                error.extra.setdefault("memory_decision", decisions.memory_decision)
        elif isinstance(error, Exception):
            trace.step("error", {"status": 500, "type": "internal_error", "code": type(error).__name__})

    def _provider_receipt(
        self,
        request: ProviderRequest,
        *,
        model: str,
        started: float,
        finish_reason: str | None,
        truncated: bool,
        usage: Usage | None,
        stream: bool,
        outcome: str,
        choices: int | None = None,
        timed_first_piece: bool = False,
        first_piece_ms: float | None = None,
    ) -> LlmProviderStep:
        """``choices`` only when there were several; ``first_piece_ms`` only for streams."""
        receipt: LlmProviderStep = {
            "provider": self.provider.name,
            "model": model,
            "stream": stream,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "attempts": request.stats.attempts or 1,
            "finish_reason": finish_reason,
            "truncated": truncated,
            "usage": usage.as_dict() if usage else None,
            "outcome": outcome,
        }
        if choices is not None:
            receipt["choices"] = choices
        if timed_first_piece:
            receipt["first_piece_ms"] = first_piece_ms
        return receipt

    def _left_receipt(self, request: ProviderRequest, started: float, *, stream: bool) -> LlmProviderStep:
        """The provider step of a request whose caller left before the answer (or the stream's
        first piece): the upstream call was stopped then."""
        return self._provider_receipt(
            request,
            model=request.model,
            started=started,
            finish_reason=None,
            truncated=False,
            usage=None,
            stream=stream,
            outcome="client_disconnected",
            timed_first_piece=stream,
        )

    async def complete(self, chat: ChatCompletionRequest, raw: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        """Answer in one piece: a ``chat.completion`` with the orchestrator fields."""
        turn = await self._prepare(chat, raw, ctx)
        trace, request = turn.trace, turn.request
        started = time.perf_counter()
        try:
            if turn.answer is not None:
                completion = Completion(content=turn.answer, model=request.model)
            else:
                # Nothing is written until the answer is complete: watch for the caller leaving.
                async with CancelOnLeave(ctx.caller_gone):
                    completion = await self.generator.complete(turn)
                truncated = self._capped(completion)
                for other in completion.others:
                    self._capped(other)
                trace.step(
                    "llm_provider",
                    self._provider_receipt(
                        request,
                        model=completion.model or request.model,
                        started=started,
                        finish_reason=completion.finish_reason,
                        truncated=truncated,
                        usage=completion.usage,
                        stream=False,
                        outcome="completed",
                        choices=1 + len(completion.others) if completion.others else None,
                    ),
                )
        except BaseException as exc:
            if isinstance(exc, CallerLeft | asyncio.CancelledError):  # (cancelled: cut at shutdown)
                trace.step("llm_provider", self._left_receipt(request, started, stream=False))
            self._failed(trace, exc, turn.decisions)
            named = self._named(trace, exc)
            if named is not exc:
                raise named from exc
            raise
        finally:
            trace.end()
        body: dict[str, Any] = {
            "id": new_completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": completion.model or request.model,
            "choices": [_choice(index, choice) for index, choice in enumerate([completion, *completion.others])],
            "usage": completion.usage.wire() if completion.usage else None,
        }
        if completion.system_fingerprint is not None:
            body["system_fingerprint"] = completion.system_fingerprint
        body.update(turn.decisions.as_dict())
        return body

    def _capped(self, completion: Completion) -> bool:
        """Cut a choice's text at ORCH_LLM_MAX_OUTPUT_CHARS (finish_reason "length"); whether it was."""
        cap = self.max_output_chars
        if cap > 0 and completion.content is not None and len(completion.content) > cap:
            completion.content = completion.content[:cap]
            completion.finish_reason = "length"
            return True
        return False

    async def open_stream(
        self, chat: ChatCompletionRequest, raw: dict[str, Any], ctx: CallContext
    ) -> AsyncIterator[bytes]:
        """Start a streamed answer.

        Everything that can fail before the first byte (validation, the stages, model choice, the
        provider's first piece) fails here, so the caller still gets a real HTTP status. The
        returned iterator yields SSE-encoded bytes and ends with ``[DONE]``.
        """
        turn = await self._prepare(chat, raw, ctx)
        trace = turn.trace
        writer = ChunkWriter(new_completion_id(), int(time.time()), turn.request.model)
        if turn.answer is not None:
            trace.end()
            return self._relay_answer(writer, turn)
        started = time.perf_counter()
        try:
            pieces = aiter(self.generator.stream(turn))
            # Nothing is written before the first piece (an upstream may send keep-alive comments
            # for minutes): watch for the caller leaving. From the first byte on, the streaming
            # response notices it (Starlette listens for http.disconnect while it streams under
            # ASGI spec < 2.4, which uvicorn reports) and the relay below records it.
            async with CancelOnLeave(ctx.caller_gone):
                first = await anext(pieces, None)
        except BaseException as exc:
            if isinstance(exc, CallerLeft | asyncio.CancelledError):
                trace.step("llm_provider", self._left_receipt(turn.request, started, stream=True))
            self._failed(trace, exc, turn.decisions)
            trace.end()
            named = self._named(trace, exc)
            if named is not exc:
                raise named from exc
            raise
        first_piece_ms = round((time.perf_counter() - started) * 1000, 3)
        trace.flush()  # a stream may run for minutes: commit how it started now
        relay = _Relay(
            request=turn.request,
            trace=trace,
            started=started,
            first_piece_ms=first_piece_ms,
            choices=chat.n or 1,
        )
        return self._relay(writer, first, pieces, relay, turn.decisions)

    @staticmethod
    async def _relay_answer(writer: ChunkWriter, turn: Turn) -> AsyncIterator[bytes]:
        """Stream a ready answer (a stage answered without the model), word by word."""
        extra: dict[str, Any] | None = turn.decisions.as_dict()
        for word in _WORDS.findall(turn.answer or ""):
            yield writer.delta(content=word, extra=extra)
            extra = None
        yield writer.delta(content="" if extra is not None else None, finish_reason="stop", extra=extra)
        yield DONE

    async def _relay(
        self,
        writer: ChunkWriter,
        first: StreamDelta | None,
        pieces: AsyncIterator[StreamDelta],
        relay: _Relay,
        decisions: Decisions,
    ) -> AsyncIterator[bytes]:
        extra: dict[str, Any] | None = decisions.as_dict()  # orchestrator fields ride on the first chunk
        cut = relay.cut
        out: list[bytes] = []  # encoded chunks not yet written: pieces of one network read go together
        try:
            piece = first
            while piece is not None:
                if piece.system_fingerprint is not None:
                    writer.fingerprint(piece.system_fingerprint)
                relay.usage = piece.usage or relay.usage
                index = piece.index
                if index == 0 and 0 not in cut:
                    relay.finish = piece.finish_reason or relay.finish
                content, cut_now = relay.capped(index, piece.content, self.max_output_chars)
                wanted = content or piece.tool_calls is not None or piece.finish_reason or piece.logprobs is not None
                if cut_now or (wanted and index not in cut):
                    out.append(
                        writer.delta(
                            content=content,
                            tool_calls=piece.tool_calls,
                            finish_reason="length" if cut_now else piece.finish_reason,
                            extra=extra,
                            index=index,
                            logprobs=piece.logprobs,
                        )
                    )
                    extra = None
                if cut and len(cut) >= relay.choices:
                    relay.usage = None  # the upstream's count will not arrive
                    break
                if out and not piece.more:
                    yield b"".join(out)
                    out.clear()
                piece = await anext(pieces, None)
            if extra is not None:  # the provider sent nothing at all: still a well-formed stream
                out.append(writer.delta(content="", finish_reason="stop", extra=extra))
            if relay.request.include_usage and relay.usage is not None:
                out.append(writer.usage(relay.usage.wire()))
            if out:
                yield b"".join(out)
                out.clear()
        except (GeneratorExit, asyncio.CancelledError):
            relay.outcome = "client_disconnected"
            raise
        except Exception as exc:
            yield b"".join([*out, writer.error(self._stream_failed(relay, exc))])
        finally:
            await self._end_stream(pieces, relay)
        yield DONE

    def _stream_failed(self, relay: _Relay, error: Exception) -> OrchestratorError:
        """Record a stream that failed after its 200 went out (receipt, metric, a warning: the
        status says nothing); return the error the caller gets in band."""
        relay.outcome = "error"
        self._failed(relay.trace, error)
        extra = {"request_id": relay.trace.id}
        if isinstance(error, OrchestratorError):
            self.stream_errors.labels(error.code).inc()
            log.warning(
                "stream ended with an error after its first byte",
                extra={**extra, "code": error.code, "status": error.status},
            )
            return error
        self.stream_errors.labels("internal_error").inc()
        log.error("stream failed after the first byte", exc_info=error, extra=extra)
        return OrchestratorError("The stream failed; the answer is incomplete.", code="internal_error", extra=extra)

    async def _end_stream(self, pieces: AsyncIterator[StreamDelta], relay: _Relay) -> None:
        """Close the upstream stream (it stops generating) and write the provider receipt."""
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            await aclose()
        relay.trace.step(
            "llm_provider",
            self._provider_receipt(
                relay.request,
                model=relay.request.model,
                started=relay.started,
                finish_reason=relay.finish,
                truncated=relay.truncated,
                usage=relay.usage,
                stream=True,
                outcome=relay.outcome,
                choices=relay.choices if relay.choices > 1 else None,
                timed_first_piece=True,
                first_piece_ms=relay.first_piece_ms,
            ),
        )
        relay.trace.end()


def _choice(index: int, completion: Completion) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": completion.content}
    if completion.tool_calls:
        message["tool_calls"] = completion.tool_calls
    choice: dict[str, Any] = {"index": index, "message": message, "finish_reason": completion.finish_reason}
    if completion.logprobs is not None:
        choice["logprobs"] = completion.logprobs
    return choice


@dataclass(slots=True)
class _Relay:
    """A stream in flight: what its receipt records when it ends."""

    request: ProviderRequest
    trace: Trace
    started: float
    first_piece_ms: float
    usage: Usage | None = None
    finish: str | None = None  # the first choice's
    truncated: bool = False  # the first choice's
    outcome: str = "completed"
    choices: int = 1  # n
    rooms: dict[int, int] = field(default_factory=dict)  # per choice: characters still allowed
    cut: set[int] = field(default_factory=set)  # choices stopped at the cap: the rest is dropped

    def capped(self, index: int, content: str | None, cap: int) -> tuple[str | None, bool]:
        """A choice's text within ORCH_LLM_MAX_OUTPUT_CHARS, and whether it was cut here. A cut
        choice finishes with "length"; once every choice is cut the relay stops the upstream
        (closing its stream), whatever it had left."""
        if cap <= 0 or not content or index in self.cut:
            return content, False
        room = self.rooms.get(index, cap)
        if len(content) <= room:
            self.rooms[index] = room - len(content)
            return content, False
        self.cut.add(index)
        if index == 0:
            self.finish, self.truncated = "length", True
        return content[:room], True
