"""Probes and metrics: ``/health`` (liveness), ``/ready`` (readiness), ``/metrics`` (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from app.deps import AuthenticatedDep, StateDep
from app.errors import ServiceUnavailable
from app.observability.metrics import CONTENT_TYPE
from app.settings import SERVICE_ID

router = APIRouter(tags=["probes"])

_HEALTH = b'{"status":"ok","service":"' + SERVICE_ID.encode() + b'"}'


@router.get("/health", summary="Liveness: the process answers", response_model=None)
async def health() -> Response:
    """Always 200 while the process runs. No auth, never rate limited."""
    return Response(_HEALTH, media_type="application/json")


@router.get(
    "/ready",
    summary="Readiness: the service can answer requests",
    responses={503: {"description": "Not ready; `reason` says why."}},
)
async def ready(state: StateDep) -> JSONResponse:
    """200 ``ready``, or 503 with ``status`` and the ``reason`` (API disabled, provider or database
    unavailable). A 200 lists in ``degraded`` what is off but not required (the sandbox without
    Docker, unless ORCH_TOOL_SANDBOX_REQUIRED=1). Results are cached for a few seconds; no auth,
    never rate limited."""
    body: dict[str, Any] = {"status": "ready", "service": SERVICE_ID}
    if not state.settings.enable_api:
        body.update(status="disabled", reason="api_disabled")
        return JSONResponse(body, status_code=503)
    report = await state.readiness.report()
    if report.checks:
        body["checks"] = report.checks
    if report.degraded:
        body["degraded"] = report.degraded
    if not report.ready:
        body.update(status="unready", reason=report.reason)
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: StateDep, _: AuthenticatedDep) -> Response:
    """Prometheus text format. Needs the bearer when auth is on; 503 with ORCH_METRICS_ENABLED=0."""
    if not state.settings.metrics_enabled:
        raise ServiceUnavailable("Metrics are disabled (ORCH_METRICS_ENABLED=0).", code="metrics_disabled")
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


# HEAD too (load balancers and uptime checkers often probe with it); documented once, as GET.
for _path, _probe in (("/health", health), ("/ready", ready)):
    router.add_api_route(_path, _probe, methods=["HEAD"], include_in_schema=False, response_model=None)
