"""Prometheus metrics on a private registry (one per app, so tests can build many apps).

Labels are bounded: the route template (``/v1/trust/trace/{trace_id}``, never the raw path), the
method and the status code. Other modules register their own metrics through :meth:`Metrics.counter`
and friends so that everything lands on the same registry.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Request latency buckets, seconds: from a fast local relay (~1 ms) to a slow model (minutes).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The service's metrics registry and the request metrics every route records."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter(
            "orch_requests_total",
            "HTTP requests by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "orch_request_latency_seconds",
            "HTTP request latency by route template and method (to the end of the response body).",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "orch_errors_total",
            "HTTP responses with a 5xx status, by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        code = str(status)
        self.requests.labels(route, method, code).inc()
        self.latency.labels(route, method).observe(seconds)
        if status >= 500:
            self.errors.labels(route, method, code).inc()

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, tuple(labels), registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, tuple(labels), registry=self.registry)

    def histogram(
        self, name: str, documentation: str, labels: Sequence[str] = (), buckets: Sequence[float] = ()
    ) -> Histogram:
        if buckets:
            return Histogram(name, documentation, tuple(labels), buckets=tuple(buckets), registry=self.registry)
        return Histogram(name, documentation, tuple(labels), registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
