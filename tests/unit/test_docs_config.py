"""Docs stay true: every flag is documented with its real default, the example file is a valid
configuration, and the README lists every route the app serves."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.routing import BaseRoute

from app.main import create_app
from app.settings import SHIPPED_AGENT_DIR, SHIPPED_ROUTER_POLICY, SHIPPED_TOOL_POLICY, Settings, load_settings

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


def _shown(value: object) -> str:
    """A default as the docs write it: booleans as 1/0, lists comma-separated, 30.0 as 30."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return ""  # an optional path, or a finer switch that follows its feature's: "(empty ...)"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if value in (SHIPPED_AGENT_DIR, SHIPPED_ROUTER_POLICY, SHIPPED_TOOL_POLICY):
        return ""  # written as "(empty = the file shipped with the service)"
    return str(value)


def test_documented_defaults_are_the_real_ones() -> None:
    table = dict(
        re.findall(r"^\| `(ORCH_[A-Z0-9_]+)` \| (.*?) \|", (ROOT / "docs/configuration.md").read_text(), re.MULTILINE)
    )
    example = dict(re.findall(r"^(ORCH_[A-Z0-9_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE))
    wrong = []
    for name, field in Settings.model_fields.items():
        flag, shown = f"ORCH_{name.upper()}", _shown(field.get_default(call_default_factory=True))
        documented = table[flag].replace("`", "")
        if not (documented == shown or (shown == "" and documented.startswith("*(empty"))):
            wrong.append(f"configuration.md {flag}: {table[flag]} (the default is {shown!r})")
        if example[flag] != shown:
            wrong.append(f".env.example {flag}={example[flag]} (the default is {shown!r})")
    assert not wrong


def _documented_routes() -> set[tuple[str, str]]:
    """(method, path) of every route in the README's table, path parameters written as {}.

    A row lists `METHOD /path`, then `/path` (the same method), `HEAD` (the same path) or
    `.../tail` (the previous path with its last part from that segment on replaced)."""
    section = (ROOT / "README.md").read_text().split("## Routes", 1)[1].split("\n## ", 1)[0]
    routes: set[tuple[str, str]] = set()
    for row in re.findall(r"^\| (.*?) \| .*\|$", section, re.MULTILINE):
        method, path = "GET", ""
        for token in re.findall(r"`([^`]+)`", row):
            if token in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}:
                routes.add((token, path))
                continue
            if token.startswith(".../"):
                tail, parts = token[4:].split("/"), path.split("/")
                path = "/".join(parts[: len(parts) - 1 - parts[::-1].index(tail[0])] + tail)
            elif token.startswith("/"):
                path = token
            elif re.fullmatch(r"[A-Z]+ /\S*", token):
                method, path = token.split(" ")
            else:
                continue
            routes.add((method, path))
    return {(method, re.sub(r"\{[^}]*\}", "{}", path)) for method, path in routes}


def test_the_readme_route_table_is_every_route_served() -> None:
    app = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    served = set()
    for route in app.routes:
        methods = set(getattr(route, "methods", None) or ())
        if isinstance(route, BaseRoute) and route.path != "/docs/oauth2-redirect":  # Swagger UI's own page
            # Starlette answers HEAD on every GET route by itself; a HEAD route of its own is listed.
            served |= {(method, re.sub(r"\{[^}]*\}", "{}", route.path)) for method in methods - {"HEAD"} or methods}
    documented = _documented_routes()
    assert served - documented == set(), "served but not in the README's table"
    assert documented - served == set(), "in the README's table but not served"
