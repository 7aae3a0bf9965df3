"""deploy/kubernetes: every manifest validated offline against the Kubernetes API's own schemas
(kubernetes-validate, strict: unknown fields refused), then held together (selectors, ports,
probes, Secrets, the policies ConfigMaps equal to policies/) and to the service's own settings:
the Deployment's environment, with the ConfigMaps laid out as the kubelet mounts them, starts the
real service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from tests.e2e.server import E2E_TOKEN, ROOT, LiveServer

K8S = ROOT / "deploy" / "kubernetes"
VERSION = "1.30.0"  # the oldest Kubernetes release still maintained upstream when this was written
FILES = sorted(K8S.glob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in FILES:
        if path.name == "kustomization.yaml":
            continue
        for doc in documents(path):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def deployment() -> dict[str, Any]:
    return resources()[("Deployment", "orchestrators")]


def container() -> dict[str, Any]:
    (main,) = deployment()["spec"]["template"]["spec"]["containers"]
    return main


@pytest.mark.parametrize("path", [p for p in FILES if p.name != "kustomization.yaml"], ids=lambda p: p.name)
def test_each_manifest_is_valid_for_the_kubernetes_api(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_validator_refuses_a_wrong_field() -> None:
    bad = yaml.safe_load(yaml.safe_dump(deployment()))
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/health"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSION, strict=True)


def test_the_kustomization_applies_everything_but_the_example_secret() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in FILES} - {"kustomization.yaml", "secret.example.yaml"}


def test_the_deployment_probes_health_and_ready_on_its_port() -> None:
    main = container()
    assert main["ports"] == [{"name": "http", "containerPort": 8088, "protocol": "TCP"}]
    assert main["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert main["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    env = {item["name"]: item.get("value") for item in main["env"]}
    assert env["ORCH_PORT"] == "8088" and env["ORCH_HOST"] == "0.0.0.0" and env["ORCH_ENV"] == "production"
    # Longer than the drain: ORCH_SHUTDOWN_GRACE_SEC (8 s) plus the last flush.
    assert deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 8


def test_the_replicas_share_postgres_and_redis_never_a_sqlite_of_their_own() -> None:
    found = resources()
    pod = deployment()["spec"]["template"]["spec"]
    assert container()["envFrom"] == [{"secretRef": {"name": "orchestrators"}}]
    secret = found[("Secret", "orchestrators")]["stringData"]
    assert secret["ORCH_DATABASE_URL"].startswith("postgresql://")
    assert secret["ORCH_RATE_LIMIT_STORAGE_URL"].startswith("redis://")
    assert {"ORCH_BEARER_TOKEN", "ORCH_APPROVER_TOKEN"} <= set(secret)
    env_names = {item["name"] for item in container()["env"]}
    assert not env_names & set(secret)  # the Secret is not overridden by a literal
    # No persistent volume: whatever a replica writes locally is gone with it.
    assert all("persistentVolumeClaim" not in volume for volume in pod["volumes"])
    assert ("StatefulSet", "orchestrators") not in found


def test_the_pod_is_locked_down() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    for each in pod["containers"] + pod["initContainers"]:
        context = each["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"] and each["resources"]["limits"]


def test_service_hpa_pdb_and_network_policy_select_the_deployments_pods() -> None:
    found = resources()
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert deployment()["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = found[("Service", "orchestrators")]["spec"]
    assert service["selector"].items() <= labels.items() and service["ports"][0]["targetPort"] == "http"
    assert found[("PodDisruptionBudget", "orchestrators")]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    policy = found[("NetworkPolicy", "orchestrators")]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["ingress"][0]["ports"] == [{"port": 8088, "protocol": "TCP"}]
    egress_ports = {port["port"] for rule in policy["egress"] for port in rule["ports"]}
    assert {53, 5432, 6379} <= egress_ports
    hpa = found[("HorizontalPodAutoscaler", "orchestrators")]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orchestrators"}
    pdb = found[("PodDisruptionBudget", "orchestrators")]["spec"]
    assert hpa["minReplicas"] > pdb["minAvailable"]  # a drain never has to wait for the autoscaler


def test_the_policies_configmaps_are_the_shipped_policies() -> None:
    found = resources()
    policies = found[("ConfigMap", "orchestrators-policies")]["data"]
    agents = found[("ConfigMap", "orchestrators-agents")]["data"]
    shipped = ROOT / "policies"
    assert policies == {name: (shipped / name).read_text() for name in ("tool_policy.yaml", "router_policy.yaml")}
    assert agents == {path.name: path.read_text() for path in sorted((shipped / "agents").glob("*.yaml"))}


def kubelet_configmap(directory: Path, data: dict[str, str]) -> None:
    """A ConfigMap volume as the kubelet writes it: the files in a timestamped directory, `..data`
    a symlink to it, and each key a symlink through `..data`."""
    stamped = directory / "..2026_01_01_00_00_00.000000001"
    stamped.mkdir(parents=True)
    for name, text in data.items():
        (stamped / name).write_text(text)
    (directory / "..data").symlink_to(stamped.name)
    for name in data:
        (directory / name).symlink_to(f"..data/{name}")


@pytest.mark.e2e
def test_the_deployments_environment_starts_the_real_service(tmp_path: Path) -> None:
    found = resources()
    mounts = {mount["name"]: mount["mountPath"] for mount in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment()["spec"]["template"]["spec"]["volumes"]}
    root = tmp_path / "pod"
    for name, path in mounts.items():
        if "configMap" in volumes[name]:
            kubelet_configmap(root / path.lstrip("/"), found[("ConfigMap", volumes[name]["configMap"]["name"])]["data"])
    env = {item["name"]: item["value"] for item in container()["env"]}
    for key, value in list(env.items()):
        if value.startswith("/etc/orchestrators/") or value.startswith("/run/orchestrators/"):
            env[key] = str(root / value.lstrip("/"))
    # The test machine's stand-ins for the Secret: development mode (placeholder-free tokens are
    # the Secret's job), SQLite in the working directory, the port and address of a test.
    env.update({"ORCH_ENV": "development"})
    for key in ("ORCH_HOST", "ORCH_PORT"):
        env.pop(key)
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    (root / "run/orchestrators/keys").mkdir(parents=True)
    with LiveServer(workdir, env) as server:
        assert httpx.get(server.url + "/ready", timeout=10).status_code == 200
        tools = httpx.get(server.url + "/v1/tools", headers={"Authorization": f"Bearer {E2E_TOKEN}"}, timeout=10)
        assert "safe_calc" in {tool["function"]["name"] for tool in tools.json()["tools"]}
        logs = server.logs()
    assert "Traceback" not in logs and os.path.exists(env["ORCH_TRUST_SIGNING_KEY_PATH"])
