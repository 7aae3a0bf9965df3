"""OpenTelemetry against a real OTLP/HTTP receiver started by the test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.server import E2E_TOKEN, LiveServer

pytestmark = pytest.mark.e2e


class Receiver:
    """A minimal OTLP/HTTP (protobuf) trace receiver: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, str]] = []
        self.event = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    service = next(
                        a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
                    )
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            receiver.spans.append(
                                {
                                    "service": service,
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "parent": span.parent_span_id.hex(),
                                    "attributes": repr(span.attributes),
                                }
                            )
                receiver.event.set()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def test_spans_arrive_and_incoming_traceparent_is_continued(tmp_path: Path, receiver: Receiver) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    env = {
        "ORCH_OTEL_ENABLED": "1",
        "ORCH_OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "ORCH_SERVICE_NAME": "orch-e2e",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with LiveServer(tmp_path, env) as server:
        headers = {"Authorization": f"Bearer {E2E_TOKEN}", "traceparent": f"00-{trace_id}-{parent}-01"}
        response = httpx.post(
            server.url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        )
        assert response.status_code == 200
        assert response.headers["x-trace-id"] == trace_id
        version, returned_trace, span_id, flags = response.headers["traceparent"].split("-")
        assert (version, returned_trace, flags) == ("00", trace_id, "01")
        assert span_id != parent
        fresh = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {E2E_TOKEN}"})
        assert fresh.headers["x-trace-id"] != trace_id and len(fresh.headers["x-trace-id"]) == 32
        assert receiver.event.wait(10), "no spans were exported"
        server.stop()  # shutdown flushes the rest
    ours = [s for s in receiver.spans if s["trace_id"] == trace_id]
    assert ours, receiver.spans
    assert all(s["service"] == "orch-e2e" for s in receiver.spans)
    assert any(s["parent"] == parent and "/v1/chat/completions" in s["name"] for s in ours)
    assert any(s["trace_id"] == fresh.headers["x-trace-id"] for s in receiver.spans)


def test_no_trace_headers_when_otel_is_off(live_server: LiveServer) -> None:
    response = httpx.get(live_server.url + "/v1/models", headers={"Authorization": f"Bearer {E2E_TOKEN}"})
    assert "traceparent" not in response.headers and "x-trace-id" not in response.headers


def test_spans_carry_no_query_string_or_raw_path(tmp_path: Path, receiver: Receiver) -> None:
    """Like the access log: a token in a query string or a key in a path never reaches a span."""
    secret = "sk-" + "Q" * 30
    env = {
        "ORCH_OTEL_ENABLED": "1",
        "ORCH_OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with LiveServer(tmp_path, env) as server:
        headers = {"Authorization": f"Bearer {E2E_TOKEN}"}
        assert httpx.get(server.url + f"/v1/models?access_token={E2E_TOKEN}", headers=headers).status_code == 200
        assert httpx.get(server.url + f"/v1/models/{secret}", headers=headers).status_code == 404
        assert httpx.get(server.url + f"/v1/nothing/{secret}?token={secret}").status_code == 404
        assert receiver.event.wait(10), "no spans were exported"
        server.stop()
    assert len(receiver.spans) >= 3
    everything = repr(receiver.spans)
    assert E2E_TOKEN not in everything and secret not in everything
    assert "/v1/models/{model_id:path}" in everything and "<unmatched>" in everything
