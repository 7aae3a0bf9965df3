"""OpenTelemetry: spans for every request, exported over OTLP/HTTP, off unless ORCH_OTEL_ENABLED=1.

The FastAPI instrumentation continues an incoming ``traceparent``; :func:`trace_headers` gives the
``traceparent`` and ``X-Trace-Id`` response headers for the current span. The provider is private
to the app (not the global one), so tests can run several apps side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import trace

from app.observability.logging import get_logger

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider

log = get_logger("otel")

# Probes and the metrics scrape would only add noise to traces.
EXCLUDED_URLS = "/health,/ready,/metrics"
_EXPORT_TIMEOUT_SEC = 5
SHUTDOWN_WAIT_SEC = 2.0  # how long the exit waits for the last spans to be exported


def instrument(app: FastAPI, *, service_name: str, endpoint: str) -> TracerProvider:
    """Instrument ``app``; return the provider so the lifespan can flush and shut it down."""
    # Imported here: the SDK, exporter and instrumentation are only loaded when OTel is on.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=_EXPORT_TIMEOUT_SEC)))
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=EXCLUDED_URLS,
        # Only the server span: per-message receive/send spans cost a lot and say little.
        exclude_spans=["receive", "send"],
    )
    return provider


async def shutdown_spans(provider: TracerProvider) -> None:
    """Export the spans still buffered, waiting at most SHUTDOWN_WAIT_SEC.

    The SDK's shutdown blocks until the exporter gives up (a collector that accepts connections
    and never answers: four 5 s export timeouts), so it runs on a daemon thread of its own and the
    exit does not wait for it past the bound; the spans it had not sent by then are lost.
    """
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    def run() -> None:
        try:
            provider.shutdown()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the exit did not wait
                loop.call_soon_threadsafe(finished)

    threading.Thread(target=run, name="otel-shutdown", daemon=True).start()
    try:
        await asyncio.wait_for(done, SHUTDOWN_WAIT_SEC)
    except TimeoutError:
        log.warning("spans not exported at shutdown: the OTLP endpoint did not answer in time")


# The span attributes that carry the raw request target (old and new semantic conventions).
_URL_ATTRIBUTES = ("http.target", "http.url", "url.full", "url.path", "url.query")


def hide_raw_url(template: str) -> None:
    """Replace the raw path and query string on the current server span with the route template.

    The instrumentation records the target as sent (``?access_token=...``, a key in a path
    segment); the access log never carries them, and neither may the spans. Called by the
    request middleware before the span ends.
    """
    span = trace.get_current_span()
    attributes = getattr(span, "attributes", None)
    if not span.is_recording() or not attributes:
        return
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if value is None:
            continue
        if key in ("http.url", "url.full"):
            parts = urlsplit(str(value))
            span.set_attribute(key, f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{template}")
        else:
            span.set_attribute(key, "" if key == "url.query" else template)


def trace_headers() -> list[tuple[bytes, bytes]]:
    """``traceparent`` and ``X-Trace-Id`` for the current span (empty when there is none)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return []
    trace_id = format(context.trace_id, "032x")
    traceparent = f"00-{trace_id}-{format(context.span_id, '016x')}-{int(context.trace_flags):02x}"
    return [(b"traceparent", traceparent.encode()), (b"x-trace-id", trace_id.encode())]


def current_trace_id() -> str | None:
    """The current OpenTelemetry trace id (hex), for receipts; None when OTel is off."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
