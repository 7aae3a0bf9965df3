"""compose.yaml is valid for the oldest Compose we support: Debian bookworm's docker-compose 1.29.2
(Compose v2 accepts everything it accepts). The check is the one that version makes first: its
own schema (tests/fixtures/compose/, Apache-2.0, see NOTICE there) with jsonschema's Draft 4
validator. v1.29.2 rejects a top-level ``name:`` and the ``env_file`` long form (path/required)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "fixtures" / "compose" / "compose_spec-1.29.2.json"


def test_compose_file_is_valid_for_docker_compose_1_29() -> None:
    validator = jsonschema.Draft4Validator(json.loads(SCHEMA.read_text()))
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '<top>'}: {error.message}"
        for error in validator.iter_errors(compose)
    ]
    assert errors == []


def test_compose_file_still_describes_the_service_and_its_stores() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    # the default profile; the observability profile's services are checked in
    # tests/unit/test_observability_files.py
    default = {name for name, service in compose["services"].items() if not service.get("profiles")}
    assert default == {"orchestrators", "postgres", "redis"}
    service = compose["services"]["orchestrators"]
    assert service["env_file"] == [".env"]
    assert service["ports"] == ["127.0.0.1:8088:8088"]
    assert service["read_only"] is True
