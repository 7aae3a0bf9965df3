"""Settings: typed flags, one clear line for a bad value, production refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import URL_FIELDS, ConfigError, Settings, load_settings, parse_principals, redact_url

GOOD_TOKEN = "9f2c1e7a4b6d8e0f1a3c5e7b9d1f3a5c"


def load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> Settings:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def test_defaults_are_the_safe_local_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = load(monkeypatch, tmp_path)
    assert settings.host == "127.0.0.1" and settings.port == 8088
    assert settings.require_bearer and settings.auth_required
    assert not settings.llm_enabled
    assert settings.rate_limit == "600 per minute" and settings.rate_limit_storage == "memory://"
    assert settings.max_request_bytes == 1_048_576
    assert not settings.otel_enabled
    assert not settings.memory_enabled and not settings.memory_capture and not settings.memory_recall_enabled


def test_memory_enabled_alone_turns_capture_on_and_the_finer_flags_refine_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = load(monkeypatch, tmp_path, ORCH_MEMORY_ENABLED="1")
    assert settings.memory_capture and settings.memory_policy == "strict"
    assert not settings.memory_recall_enabled  # recall changes prompts: its own opt-in
    off = load(monkeypatch, tmp_path, ORCH_MEMORY_ENABLED="1", ORCH_MEMORY_CAPTURE_ENABLED="0")
    assert not off.memory_capture
    everything = load(monkeypatch, tmp_path, ORCH_MEMORY_CAPTURE_ENABLED="1", ORCH_MEMORY_WRITE_POLICY="capture_only")
    assert everything.memory_policy == "capture_only" and everything.memory_capture
    # an empty value (as in .env.example) follows ORCH_MEMORY_ENABLED
    empty = load(
        monkeypatch, tmp_path, ORCH_MEMORY_ENABLED="1", ORCH_MEMORY_CAPTURE_ENABLED="", ORCH_MEMORY_WRITE_POLICY=""
    )
    assert empty.memory_capture and empty.memory_policy == "strict"
    assert not load(monkeypatch, tmp_path, ORCH_MEMORY_ENABLED="0", ORCH_MEMORY_CAPTURE_ENABLED="1").memory_capture


def test_memory_min_is_bounded_by_memory_max_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = load(monkeypatch, tmp_path, ORCH_MEMORY_MIN_CHARS="1500", ORCH_MEMORY_MAX_CHARS="2000")
    assert settings.memory_min_chars == 1500
    with pytest.raises(ConfigError, match="ORCH_MEMORY_MIN_CHARS='0'"):
        load(monkeypatch, tmp_path, ORCH_MEMORY_MIN_CHARS="0")


def test_memory_min_above_max_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, tmp_path, ORCH_MEMORY_MIN_CHARS="600", ORCH_MEMORY_MAX_CHARS="500")
    assert "ORCH_MEMORY_MIN_CHARS" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("ORCH_PORT", "abc", "ORCH_PORT='abc'"),
        ("ORCH_PORT", "70000", "ORCH_PORT='70000'"),
        ("ORCH_HOST", "999.1.1.1", "ORCH_HOST='999.1.1.1'"),
        ("ORCH_HOST", "10.0.0", "ORCH_HOST='10.0.0'"),
        ("ORCH_HOST", "http://localhost", "ORCH_HOST='http://localhost'"),
        ("ORCH_HOST", "127.0.0.1:8088", "ORCH_HOST='127.0.0.1:8088'"),
        ("ORCH_HOST", "my host", "ORCH_HOST='my host'"),
        ("ORCH_HOST", "", "ORCH_HOST=''"),
        ("ORCH_LLM_PROVIDER", "gpt5", "ORCH_LLM_PROVIDER='gpt5'"),
        ("ORCH_RATE_LIMIT", "abc", "ORCH_RATE_LIMIT='abc'"),
        ("ORCH_RATE_LIMIT", "0 per minute", "ORCH_RATE_LIMIT='0 per minute'"),
        ("ORCH_RATE_LIMIT", "10 per second; 0/hour", "ORCH_RATE_LIMIT='10 per second; 0/hour'"),
        ("ORCH_RATE_LIMIT_STORAGE_URL", "mysql://x", "ORCH_RATE_LIMIT_STORAGE_URL"),
        ("ORCH_LOG_LEVEL", "LOUD", "ORCH_LOG_LEVEL='LOUD'"),
        ("ORCH_REQUIRE_BEARER", "maybe", "ORCH_REQUIRE_BEARER='maybe'"),
        ("ORCH_MAX_REQUEST_BYTES", "-5", "ORCH_MAX_REQUEST_BYTES='-5'"),
        ("ORCH_ENV", "staging", "ORCH_ENV='staging'"),
        ("ORCH_TRUSTED_PROXIES", "not-an-ip", "ORCH_TRUSTED_PROXIES"),
        ("ORCH_OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://x", "ORCH_OTEL_EXPORTER_OTLP_ENDPOINT"),
        ("ORCH_MEMORY_WRITE_POLICY", "always", "ORCH_MEMORY_WRITE_POLICY='always'"),
        ("ORCH_MEMORY_ENABLED", "sometimes", "ORCH_MEMORY_ENABLED='sometimes'"),
        ("ORCH_MEMORY_CAPTURE_TTL_MINUTES", "0", "ORCH_MEMORY_CAPTURE_TTL_MINUTES='0'"),
        ("ORCH_MEMORY_MAX_CHARS", "5", "ORCH_MEMORY_MAX_CHARS='5'"),
        ("ORCH_MEMORY_RECALL_MAX_ITEMS", "0", "ORCH_MEMORY_RECALL_MAX_ITEMS='0'"),
        ("ORCH_MEMORY_PURGE_INTERVAL_SEC", "0", "ORCH_MEMORY_PURGE_INTERVAL_SEC='0'"),
        ("ORCH_TRUST_PANEL_MAX_VALUE_CHARS", "8", "ORCH_TRUST_PANEL_MAX_VALUE_CHARS='8'"),
        ("ORCH_TRUST_PANEL_MAX_VALUE_CHARS", "31", "ORCH_TRUST_PANEL_MAX_VALUE_CHARS='31'"),
        ("ORCH_SANDBOX_IMAGE", "", "ORCH_SANDBOX_IMAGE=''"),
        ("ORCH_SANDBOX_IMAGE", "  ", "ORCH_SANDBOX_IMAGE='  '"),
        ("ORCH_SANDBOX_IMAGE", "my image:1", "ORCH_SANDBOX_IMAGE='my image:1'"),
    ],
)
def test_a_bad_value_names_the_flag_and_the_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, tmp_path, **{flag: value})
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_secret_values_are_not_echoed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, tmp_path, ORCH_PRINCIPALS="alice:supersecretvalue")
    assert "ORCH_PRINCIPALS" in str(caught.value)
    assert "supersecretvalue" not in str(caught.value)


@pytest.mark.parametrize(
    "flag",
    [
        "ORCH_RATE_LIMIT_STORAGE_URL",
        "ORCH_OTEL_EXPORTER_OTLP_ENDPOINT",
        "ORCH_OPENAI_BASE_URL",
        "ORCH_OLLAMA_URL",
        "ORCH_TOOL_WEB_SEARCH_URL",
        "ORCH_SANDBOX_DOCKER_URL",
    ],
)
def test_a_bad_url_is_echoed_without_its_password_or_query(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, tmp_path, **{flag: "bogus://u:SECRETJJJ@x/p?token=QQQ"})
    assert f"{flag}='bogus://u:***@x/p?***': expected" in str(caught.value)
    assert "SECRETJJJ" not in str(caught.value) and "QQQ" not in str(caught.value)


def test_every_url_flag_is_redacted() -> None:
    urlish = {name for name in Settings.model_fields if name.endswith(("_url", "_endpoint"))}
    assert urlish - {"database_url"} <= URL_FIELDS  # ORCH_DATABASE_URL is never echoed at all


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://u:pa/ss@cache", "redis://u:***@cache"),  # unencoded "/" in a password
        ("redis://u:p@ss@cache", "redis://u:***@cache"),  # unencoded "@"
        ("u:pw@cache", "u:***@cache"),  # no scheme
        ("https://host/v1#key=abc", "https://host/v1?***"),
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),  # nothing to hide
        ("grpc://x", "grpc://x"),
    ],
)
def test_redact_url(value: str, shown: str) -> None:
    assert redact_url(value) == shown


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"ORCH_REQUIRE_BEARER": "0", "ORCH_BEARER_TOKEN": GOOD_TOKEN}, "ORCH_REQUIRE_BEARER=0"),
        ({"ORCH_BEARER_TOKEN": ""}, "ORCH_BEARER_TOKEN"),
        ({"ORCH_BEARER_TOKEN": "changeme_for_production"}, "placeholder"),
        ({"ORCH_BEARER_TOKEN": "short"}, "placeholder or short"),
        ({"ORCH_BEARER_TOKEN": GOOD_TOKEN}, "ORCH_RATE_LIMIT_STORAGE_URL is required"),
    ],
)
def test_production_refuses_unsafe_configurations(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, tmp_path, ORCH_ENV="production", **env)
    assert fragment in str(caught.value)


def test_production_starts_when_safe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = load(
        monkeypatch,
        tmp_path,
        ORCH_ENV="production",
        ORCH_BEARER_TOKEN=GOOD_TOKEN,
        ORCH_RATE_LIMIT_STORAGE_URL="redis://127.0.0.1:6379/0",
    )
    assert settings.auth_required
    off = load(monkeypatch, tmp_path, ORCH_RATE_LIMIT_ENABLED="0", ORCH_RATE_LIMIT_STORAGE_URL="")
    assert off.env == "production" and not off.rate_limit_enabled


def test_dotenv_is_read_from_the_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ORCH_PORT=9099\nORCH_LLM_MODEL_ALLOWLIST=a, b ,c\n")
    settings = load(monkeypatch, tmp_path)
    assert settings.port == 9099
    assert settings.llm_model_allowlist == ["a", "b", "c"]


def test_principals_parse() -> None:
    assert parse_principals("alice=t1, bob = t2,") == {"alice": "t1", "bob": "t2"}
    for bad in ("alice", "=t", "alice=", "a b=t", "alice=t1,alice=t2"):
        with pytest.raises(ValueError):
            parse_principals(bad)
    # the service's own identities: a principal named "owner" would read the owner's memories,
    # receipts and the ledger, which are scoped by the name alone
    for reserved in ("owner", "Owner", "approver", "anonymous"):
        with pytest.raises(ValueError, match="reserved"):
            parse_principals(f"{reserved}=imposter-token-0123456789")


BOOLEAN_FLAGS = sorted(
    f"ORCH_{name.upper()}" for name, field in Settings.model_fields.items() if field.annotation is bool
)


def test_boolean_flags_accept_the_documented_words_in_any_case(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    words = {"1": True, "0": False, "true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}
    for word, expected in words.items():
        for spelling in (word, word.upper(), word.capitalize(), f" {word} "):
            assert load(monkeypatch, tmp_path, ORCH_METRICS_ENABLED=spelling).metrics_enabled is expected


@pytest.mark.parametrize("flag", BOOLEAN_FLAGS)
@pytest.mark.parametrize("value", ["y", "n", "t", "f", "Y", "2", "enabled", ""])
def test_boolean_flags_refuse_anything_else(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: str, value: str
) -> None:
    """Every boolean flag, not only the ones someone remembered: pydantic alone takes y/n/t/f."""
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, tmp_path, **{flag: value})
    assert f"{flag}={value!r}: expected 1/0, true/false, yes/no or on/off" in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "api-1.internal.example", "host."])
def test_host_accepts_addresses_and_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, host: str) -> None:
    assert load(monkeypatch, tmp_path, ORCH_HOST=host).host == host


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("32", 32), ("500", 500)])
def test_trust_panel_value_cap_is_off_or_at_least_32(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, expected: int
) -> None:
    loaded = load(monkeypatch, tmp_path, ORCH_TRUST_PANEL_MAX_VALUE_CHARS=value)
    assert loaded.trust_panel_max_value_chars == expected
