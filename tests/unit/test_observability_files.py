"""deploy/observability and compose.yaml's profiles, checked with the tools that read them:
promtool (the rules, their unit tests, the config), docker-compose 1.29.2's `config` (both
profiles), and the Grafana dashboard and the collector config parsed and held to the metrics the
service really exports (scraped from a running app, not a list kept by hand)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI

from tests.conftest import running

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "deploy" / "observability"
PROM = OBS / "prometheus"
DASHBOARD = OBS / "grafana" / "dashboards" / "orchestrators.json"
OBSERVABILITY = {"otel-collector", "prometheus", "grafana"}
# Prometheus' own series, not the service's.
PROMETHEUS_SERIES = {"up"}
PROMQL_WORDS = {"sum", "by", "rate", "increase", "max", "histogram_quantile", "without", "or", "le"}


def tool(name: str, install: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is required for this test: {install}", pytrace=False)
    return found


def promtool() -> str:
    return tool("promtool", "apt-get install --no-install-recommends prometheus (Debian ships promtool in it)")


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The series names an expression reads: identifiers not inside {...} or quotes, not PromQL
    words, histogram suffixes stripped to the family's name."""
    bare = re.sub(r"\{[^}]*\}|\"[^\"]*\"|\[[^\]]*\]", "", expr)
    names = set()
    for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
        if word in PROMQL_WORDS or word in {"reason", "route", "status", "code", "instance", "job"}:
            continue
        names.add(re.sub(r"_(bucket|sum|count)$", "", word))
    return names


async def exported_families(app_factory: Callable[..., FastAPI]) -> set[str]:
    async with running(app_factory()) as client:
        text = (await client.get("/metrics")).text
    return set(re.findall(r"^# TYPE (\S+) ", text, re.M))


# --- Prometheus ----------------------------------------------------------------------------------


def test_the_alert_rules_pass_promtool() -> None:
    result = run([promtool(), "check", "rules", str(PROM / "alerts.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_each_alert_fires_on_its_failure_and_not_on_a_healthy_service() -> None:
    result = run([promtool(), "test", "rules", "alerts.test.yml"], cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROM / "alerts.test.yml").read_text()))
    defined = {
        rule["alert"]
        for group in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    assert defined - {"OrchestratorsStreamErrors"} <= tested, defined - tested


def test_the_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    # The config's absolute paths are the container's: pointed at copies here, token included.
    text = (PROM / "prometheus.yml").read_text()
    assert "/etc/prometheus/alerts.yml" in text and "/run/prometheus/orchestrators-token" in text
    shutil.copy(PROM / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "token").write_text("x")
    text = text.replace("/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml"))
    text = text.replace("/run/prometheus/orchestrators-token", str(tmp_path / "token"))
    (tmp_path / "prometheus.yml").write_text(text)
    result = run([promtool(), "check", "config", str(tmp_path / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(text)
    service = next(job for job in config["scrape_configs"] if job["job_name"] == "orchestrators")
    assert service["metrics_path"] == "/metrics" and service["authorization"]["type"] == "Bearer"
    assert service["static_configs"][0]["targets"] == ["orchestrators:8088"]


async def test_the_rules_and_the_dashboard_name_only_exported_metrics(app_factory: Callable[..., FastAPI]) -> None:
    families = await exported_families(app_factory)
    assert "orch_requests_total" in families and "orch_upstream_circuit_open" in families
    for expr in alert_exprs() + dashboard_exprs():
        unknown = metric_names(expr) - families - PROMETHEUS_SERIES
        assert not unknown, f"{expr!r} reads {sorted(unknown)}, which the service does not export"


def test_a_metric_the_service_does_not_export_is_caught() -> None:
    # The check above is only as good as metric_names: it must see a misspelt name.
    assert metric_names('sum by (le) (rate(orch_request_latncy_seconds_bucket{route="/x"}[5m]))') == {
        "orch_request_latncy_seconds"
    }


# --- Grafana -------------------------------------------------------------------------------------


def test_the_dashboard_is_a_provisionable_grafana_dashboard(tmp_path: Path) -> None:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "orchestrators" and board["title"] and isinstance(board["schemaVersion"], int)
    datasource = yaml.safe_load((OBS / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (source,) = datasource["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 10
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"] and all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])
    provider = yaml.safe_load((OBS / "grafana/provisioning/dashboards/orchestrators.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    # Every panel's query is valid PromQL: promtool parses it as a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"panel:{n}", "expr": e} for n, e in enumerate(dashboard_exprs())],
            }
        ]
    }
    (tmp_path / "dashboard-rules.yml").write_text(yaml.safe_dump(rules))
    result = run([promtool(), "check", "rules", str(tmp_path / "dashboard-rules.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


# --- the OpenTelemetry Collector -----------------------------------------------------------------


def test_the_collector_receives_the_services_otlp_traces() -> None:
    config = yaml.safe_load((OBS / "otel-collector.yaml").read_text())
    assert {"receivers", "processors", "exporters", "service"} <= set(config)
    pipeline = config["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert pipeline[kind] and set(pipeline[kind]) <= set(config[kind]), kind
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    endpoint = compose["services"]["orchestrators"]["environment"]["ORCH_OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint == "http://otel-collector:4318/v1/traces"  # the collector's service name and OTLP/HTTP port
    # Prometheus scrapes the collector's own metrics where the collector serves them.
    prometheus = yaml.safe_load((PROM / "prometheus.yml").read_text())
    collector = next(job for job in prometheus["scrape_configs"] if job["job_name"] == "otel-collector")
    port = config["service"]["telemetry"]["metrics"]["address"].rsplit(":", 1)[1]
    assert collector["static_configs"][0]["targets"] == [f"otel-collector:{port}"]


# --- compose.yaml --------------------------------------------------------------------------------


def compose_project(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "compose.yaml", tmp_path / "compose.yaml")
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    (tmp_path / ".env").write_text("")  # env_file: [.env] must exist
    return tmp_path


@pytest.mark.parametrize("profile", [[], ["--profile", "observability"]])
def test_docker_compose_accepts_both_profiles(tmp_path: Path, profile: list[str]) -> None:
    compose = tool("docker-compose", "apt-get install docker-compose (Debian bookworm: 1.29.2)")
    result = run([compose, *profile, "config"], cwd=compose_project(tmp_path))
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert OBSERVABILITY | {"orchestrators", "postgres", "redis"} <= set(config["services"])
    for name in OBSERVABILITY:
        service = config["services"][name]
        assert service["profiles"] == ["observability"], name
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts {source}, which is not in the tree"


def test_the_default_profile_is_the_service_and_its_stores() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert {name for name, service in services.items() if not service.get("profiles")} == {
        "orchestrators",
        "postgres",
        "redis",
    }
    for name in OBSERVABILITY:
        for port in services[name].get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # loopback only, as the service
