"""Docs stay true: every flag is documented, and the example file is a valid configuration."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from app.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
FLAGS = sorted(f"ORCH_{name.upper()}" for name in Settings.model_fields)


@pytest.mark.parametrize("document", [".env.example", "docs/configuration.md"])
def test_every_flag_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = [flag for flag in FLAGS if not re.search(rf"\b{flag}\b", text)]
    assert not missing, f"{document} does not mention {missing}"


def test_no_documented_flag_is_unknown() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^(ORCH_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert listed == set(FLAGS)


def test_env_example_is_a_valid_configuration_with_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    monkeypatch.chdir(tmp_path)
    from_example = load_settings()
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_example.model_dump() == defaults.model_dump()
