"""The routing flags: defaults, the shipped policy files wherever the service starts, bad values
and combinations stopping startup with one line naming the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import SHIPPED_AGENT_DIR, SHIPPED_ROUTER_POLICY, ConfigError, Settings, load_settings


def test_defaults_point_at_the_shipped_files_wherever_the_service_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for key in ("ORCH_AGENT_DIR", "ORCH_ROUTER_POLICY_PATH"):
        monkeypatch.setenv(key, "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.agent_dir == SHIPPED_AGENT_DIR and (SHIPPED_AGENT_DIR / "holly.yaml").is_file()
    assert settings.router_policy_path == SHIPPED_ROUTER_POLICY and SHIPPED_ROUTER_POLICY.is_file()
    assert settings.orchestrator_mode == "basic" and not settings.intent_router_enabled
    assert settings.intent_min_confidence == 0.85 and settings.intent_min_gap == 0.05
    assert settings.intent_cache_db_path == tmp_path / "instance" / "intent_cache.db"


def test_relative_paths_resolve_against_the_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_AGENT_DIR", "my-agents")
    monkeypatch.setenv("ORCH_ROUTER_POLICY_PATH", "conf/router.yaml")
    settings = load_settings(_env_file=None)
    assert settings.agent_dir == tmp_path / "my-agents"
    assert settings.router_policy_path == tmp_path / "conf" / "router.yaml"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ORCH_ORCHESTRATOR_MODE": "fancy"}, "ORCH_ORCHESTRATOR_MODE='fancy'"),
        ({"ORCH_INTENT_MIN_CONFIDENCE": "1.5"}, "ORCH_INTENT_MIN_CONFIDENCE='1.5'"),
        ({"ORCH_INTENT_MIN_GAP": "-0.1"}, "ORCH_INTENT_MIN_GAP='-0.1'"),
        ({"ORCH_INTENT_CACHE_TTL_SEC": "0"}, "ORCH_INTENT_CACHE_TTL_SEC='0'"),
        ({"ORCH_INTENT_HITL_ENABLED": "maybe"}, "ORCH_INTENT_HITL_ENABLED='maybe'"),
        ({"ORCH_INTENT_ROUTER_SHADOW": "1"}, "needs ORCH_INTENT_ROUTER_ENABLED=1"),
        ({"ORCH_INTENT_ROUTER_ENABLED": "1"}, "routes only with ORCH_ORCHESTRATOR_MODE=advanced"),
    ],
)
def test_bad_routing_flags_stop_startup_with_one_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_the_intent_router_in_advanced_or_shadow_mode_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_INTENT_ROUTER_ENABLED", "1")
    monkeypatch.setenv("ORCH_ORCHESTRATOR_MODE", "advanced")
    assert load_settings(_env_file=None).intent_router_enabled
    monkeypatch.setenv("ORCH_ORCHESTRATOR_MODE", "basic")
    monkeypatch.setenv("ORCH_INTENT_ROUTER_SHADOW", "1")
    assert load_settings(_env_file=None).intent_router_shadow
