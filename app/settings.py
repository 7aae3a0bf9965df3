"""Every ``ORCH_*`` flag, typed and validated once at startup.

This is the only module that reads the environment. A bad value stops the service with one line
naming the flag and the value (see :func:`load_settings`); nothing else in the code base calls
``os.getenv``.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from app.auth import ANONYMOUS_ID, APPROVER_ID, OWNER_ID

SERVICE_ID = "orchestrators_v2"  # the `service` field of /health and /ready (wire contract)

# The policy files shipped with the service (agents, router policy), next to the app package.
POLICIES_DIR = Path(__file__).resolve().parents[1] / "policies"
SHIPPED_AGENT_DIR = POLICIES_DIR / "agents"
SHIPPED_ROUTER_POLICY = POLICIES_DIR / "router_policy.yaml"
SHIPPED_TOOL_POLICY = POLICIES_DIR / "tool_policy.yaml"

# Placeholder tokens that ship in example files; production refuses to start with any of them.
PLACEHOLDER_TOKENS = frozenset(
    {
        "changeme",
        "changeme_for_production",
        "change_me",
        "replace_me",
        "rotate_me_32_chars_min",
        "your-token-here",
        "token",
        "secret",
        "test",
        "testtoken",
    }
)

# Secret-valued flags: their values are never echoed in error messages.
_SECRET_FIELDS = frozenset({"bearer_token", "principals", "openai_api_key", "database_url"})
_SECRET_FIELDS = _SECRET_FIELDS | {"approver_token"}  # the tools' approver bearer
# URL-valued flags: echoed in error messages with their password and query string withheld
# (redis://:<password>@host, https://<user>:<key>@proxy/v1?api_key=...).
URL_FIELDS = frozenset(
    {
        "rate_limit_storage_url",
        "otel_exporter_otlp_endpoint",
        "ollama_url",
        "openai_base_url",
        "tool_web_search_url",
        "sandbox_docker_url",
    }
)


MAX_APPROVAL_TTL_SEC = 7 * 86_400  # an approval is for a call about to happen, not a standing grant
MAX_MEMORY_TTL_MINUTES = 10 * 525_600  # ten years: an upper bound that still catches a typo of units
MEMORY_MIN_CHARS_FLOOR = 20  # a smaller cap could not hold any memory worth keeping
# A shortened value ends with "...[truncated]" (14 characters): a display cap below this would show
# less of the value than of the marker ("orchestrators-demo" at 8 showed nothing of it).
TRUST_PANEL_MIN_VALUE_CHARS = 32


# The words a boolean flag accepts (any case). Pydantic alone also takes y/n/t/f, and a typo that
# happens to be one of those would silently flip a switch.
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def _switch(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # Settings(...) built in code
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


Switch = Annotated[bool, BeforeValidator(_switch)]
"""A boolean flag: exactly the documented words, any case; anything else is a bad value."""


def _optional_switch(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _switch(value)


FollowingSwitch = Annotated[bool | None, BeforeValidator(_optional_switch)]
"""A finer switch of a feature: empty (the default) follows the feature's own switch."""


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """The service configuration. Field ``foo_bar`` is the environment flag ``ORCH_FOO_BAR``."""

    model_config = SettingsConfigDict(
        env_prefix="ORCH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # --- server ---------------------------------------------------------------------------
    env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(8088, ge=1, le=65535)
    enable_api: Switch = True
    # After SIGTERM, requests still running (a long stream) get this long, then are cancelled and
    # the receipts drained. Below the supervisor's kill timeout (docker stop: 10 s).
    shutdown_grace_sec: int = Field(8, ge=0, le=3600)

    # --- auth -----------------------------------------------------------------------------
    require_bearer: Switch = True
    bearer_token: SecretStr = SecretStr("")
    # Extra callers, each with its own identity: "alice=tokenA,bob=tokenB". Memory, rate limits
    # and receipts are scoped by this name.
    principals: SecretStr = SecretStr("")
    # Where a generated development token is kept so that restarts and workers agree on it.
    dev_token_path: Path = Path("instance/dev-token")

    # --- guardrails -----------------------------------------------------------------------
    max_request_bytes: int = Field(1_048_576, ge=1)
    rate_limit_enabled: Switch = True
    # Per caller. One person's clients (a chat UI, an agent's tool loop) send bursts of calls per
    # turn; this still stops a runaway script (docs/configuration.md says why this number).
    rate_limit: str = "600 per minute"
    rate_limit_storage_url: str = ""
    # Trust X-Forwarded-For from these proxies (comma list of IPs) when keying anonymous callers.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- observability --------------------------------------------------------------------
    log_json: Switch = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    metrics_enabled: Switch = True
    otel_enabled: Switch = False
    otel_exporter_otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    service_name: str = "orchestrators-v2"

    # --- persistence ----------------------------------------------------------------------
    # Postgres for every store (postgresql://user@host:5432/db); empty: SQLite files below.
    database_url: SecretStr = SecretStr("")
    db_pool_recycle: float = Field(300.0, gt=0)
    # How long any one database call may wait (a Postgres connect, pool acquire or statement; a
    # SQLite lock): a hung database costs a request this long, then 503 database_unavailable.
    # Under /ready's 5 s check bound, so that a route answers before the probe gives up.
    db_timeout_sec: float = Field(3.0, gt=0, le=300)
    sqlite_wal_enabled: Switch = True

    # --- receipts (traces) ----------------------------------------------------------------
    trace_enabled: Switch = True
    trace_db_path: Path = Path("instance/trace.db")
    # Group commit: receipts are written at most this long after the request; a crash loses at
    # most this window.
    trace_flush_interval_ms: int = Field(50, ge=1, le=10_000)
    trace_queue_max: int = Field(100_000, ge=100)
    trust_panel_enabled: Switch = False
    trust_panel_debug: Switch = False
    trust_panel_max_events: int = Field(200, ge=1, le=10_000)
    trust_panel_max_value_chars: int = Field(500, ge=0)  # 0: no cap, else >= TRUST_PANEL_MIN_VALUE_CHARS
    # Signed checkpoints of the receipt log (docs/receipts.md, "Signed checkpoints"): the Ed25519
    # key (generated here on first start, mode 0600), the log's name (empty: the key's name), how
    # often a checkpoint is signed when the log grew, and a file outside the database that every
    # checkpoint is appended to (empty: none).
    trust_signing_key_path: Path = Path("instance/trust-signing-key")
    trust_log_origin: str = Field("", max_length=200)
    trust_checkpoint_interval_sec: float = Field(5.0, ge=0.1, le=86_400)
    trust_witness_path: Path | None = None
    # Retention (docs/receipts.md, "Retention"): traces finished longer ago than this many days
    # (fractions allowed), or the oldest beyond this many MB of retained receipts, lose their
    # steps; their ledger entries, tree and checkpoints stay. 0: off. The pruner runs every
    # interval and writes what it deletes to the archive directory first when one is set.
    trace_retention_days: float = Field(0.0, ge=0, le=36_500)
    trace_retention_max_mb: float = Field(0.0, ge=0)
    trace_retention_interval_sec: float = Field(300.0, ge=0.1, le=86_400)
    trace_archive_dir: Path | None = None
    # Redact emails and phone numbers (not only credentials) in receipts and memories.
    memory_scrub_redact_pii: Switch = True

    # --- LLM ------------------------------------------------------------------------------
    llm_enabled: Switch = False
    llm_provider: Literal["demo", "ollama", "openai"] = "ollama"
    model_chat: str = "qwen2.5:3b"
    llm_model_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Non-loopback upstreams are refused unless this is on (local-first).
    llm_network_enabled: Switch = False
    ollama_url: str = "http://127.0.0.1:11434"
    # What the OpenAI client calls base_url, /v1 included.
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_api_key: SecretStr = SecretStr("")
    # No byte for this long fails the attempt. A local model on a laptop can think for minutes
    # before a non-streamed answer's first byte; 600 s is also the OpenAI client's own default.
    llm_timeout_sec: float = Field(600.0, gt=0)
    llm_health_timeout_sec: float = Field(5.0, gt=0)
    # Bounds the memory one reply may take, above what a 32k-token context can produce (~130k
    # characters), so that a long answer is kept whole. <= 0: unlimited.
    llm_max_output_chars: int = 200_000
    llm_retry_count: int = Field(0, ge=0, le=10)
    llm_retry_backoff_sec: float = Field(0.5, ge=0)
    llm_circuit_max_failures: int = Field(3, ge=0)  # 0: breaker off
    llm_circuit_reset_sec: float = Field(30.0, gt=0)

    # --- agents and routing (docs/agents.md, docs/routing.md) ------------------------------
    # Empty: the files shipped with the service (policies/ next to the app package), wherever
    # the service is started from. A relative path resolves against the working directory.
    agent_dir: Path = SHIPPED_AGENT_DIR
    router_policy_path: Path = SHIPPED_ROUTER_POLICY
    # basic: every chat goes to the provider; advanced: the router policy decides first.
    orchestrator_mode: Literal["basic", "advanced"] = "basic"
    # The intent tiers after the rules: the decision cache (tier 1) and the classifier (tier 2).
    intent_router_enabled: Switch = False
    # Observe only: the intent router runs beside the path in use and its agreement is counted.
    intent_router_shadow: Switch = False
    intent_decision_expose: Switch = False
    intent_min_confidence: float = Field(0.85, ge=0, le=1)
    intent_min_gap: float = Field(0.05, ge=0, le=1)
    intent_cache_enabled: Switch = True
    intent_cache_ttl_sec: int = Field(600, ge=1)
    intent_cache_db_path: Path = Path("instance/intent_cache.db")
    # Tier 2: ask the provider to classify a message no rule decided (one extra model call).
    intent_classifier_enabled: Switch = False
    intent_classifier_model: str = ""  # empty: the default model
    intent_hitl_enabled: Switch = True
    intent_hitl_db_path: Path = Path("instance/hitl_queue.db")
    # The semantic tier: a message no rule matched goes to the tool nearest in meaning (local
    # embedding model all-MiniLM-L6-v2, installed with `make embed-model`). The floor and the gap
    # are cosine similarities of that model, calibrated on the golden set (docs/routing.md).
    semantic_router_enabled: Switch = False
    semantic_router_min_similarity: float = Field(0.50, ge=0, le=1)
    semantic_router_min_gap: float = Field(0.05, ge=0, le=1)
    # --- tools: registry, tool policy, approvals, sandbox ------------------------------------
    # The approver's bearer: the only credential that may approve tool calls, and it may do
    # nothing else (separation of duties). Empty: approvals are refused.
    approver_token: SecretStr = SecretStr("")
    tool_policy_path: Path = SHIPPED_TOOL_POLICY
    tool_policy_enforce: Switch = True
    policy_decisions_in_response: Switch = False
    tool_approval_enforce: Switch = True
    tool_approval_ttl_sec: int = Field(900, ge=1, le=MAX_APPROVAL_TTL_SEC)
    tool_approval_db_path: Path = Path("instance/tool_approvals.db")
    tool_output_max_chars: int = Field(4000, ge=100, le=1_000_000)
    tool_output_scrub_enabled: Switch = True
    tool_web_search_enabled: Switch = False
    tool_web_search_url: str = "https://html.duckduckgo.com/html/"
    tool_sandbox_enabled: Switch = True
    # 0: without Docker the service stays ready (listed as degraded) and sandboxed tools answer
    # sandbox_unavailable; 1: /ready fails until the sandbox works.
    tool_sandbox_required: Switch = False
    sandbox_image: str = "orchestrators-sandbox:1"
    sandbox_timeout_sec: float = Field(10.0, gt=0, le=300)
    sandbox_memory_mb: int = Field(256, ge=32, le=65_536)
    sandbox_cpu: float = Field(0.5, gt=0, le=64)
    sandbox_pool_size: int = Field(2, ge=0, le=32)
    # Docker endpoint (unix:///var/run/docker.sock, tcp://...); empty: DOCKER_HOST or the default socket.
    sandbox_docker_url: str = ""
    max_tool_rounds: int = Field(4, ge=1, le=32)

    # --- memory gate (docs/memory.md): off by default ------------------------------------
    # ORCH_MEMORY_ENABLED=1 alone turns the feature on with its safe defaults (capture on, policy
    # strict); the finer flags below refine it when set.
    memory_enabled: Switch = False
    memory_capture_enabled: FollowingSwitch = None  # empty: on when memory is
    # off: nothing is stored; strict: only messages with an explicit intent phrase
    # ("remember this", ...); capture_only: every message long enough (after scrubbing).
    # Empty: strict (nothing is stored that the user did not ask to keep).
    memory_write_policy: Literal["off", "strict", "capture_only"] | None = None
    memory_capture_ttl_minutes: int = Field(180, ge=1, le=MAX_MEMORY_TTL_MINUTES)
    memory_db_path: Path = Path("instance/memory.db")
    memory_max_chars: int = Field(500, ge=MEMORY_MIN_CHARS_FLOOR, le=20_000)  # stored memories are cut here
    # Shorter (after scrubbing) is deny:scrubbed_too_short. Bounded above by memory_max_chars only.
    memory_min_chars: int = Field(10, ge=1)
    # Same content seen again within this window updates the entry instead of adding one.
    memory_dedupe_window_minutes: int = Field(1440, ge=0, le=MAX_MEMORY_TTL_MINUTES)
    memory_recall_enabled: Switch = False
    memory_recall_max_items: int = Field(5, ge=1, le=50)
    memory_recall_max_chars: int = Field(1000, ge=50, le=20_000)
    memory_purge_interval_sec: float = Field(300.0, ge=1, le=86_400)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("env", "llm_provider", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("trusted_proxies", "llm_model_allowlist", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        return _csv(value)

    @field_validator(
        "dev_token_path", "trace_db_path", "trust_signing_key_path", "trust_witness_path", "trace_archive_dir"
    )
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Relative paths resolve against the working directory, once, at startup.
        return value if value is None or value.is_absolute() else Path.cwd() / value

    @field_validator("trust_witness_path", "trace_archive_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("trust_log_origin")
    @classmethod
    def _check_origin(cls, value: str) -> str:
        if value and any(ch.isspace() or ch == "+" for ch in value):
            raise ValueError("expected a name without spaces or '+', such as example.com/orchestrators/receipts")
        return value

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        value = value.strip()
        if not is_bind_host(value):
            raise ValueError("expected an IP address (127.0.0.1, 0.0.0.0, ::1, ::) or a host name (localhost)")
        return value

    @field_validator("trust_panel_max_value_chars")
    @classmethod
    def _check_display_cap(cls, value: int) -> int:
        if 0 < value < TRUST_PANEL_MIN_VALUE_CHARS:
            raise ValueError(f"expected 0 (no cap) or at least {TRUST_PANEL_MIN_VALUE_CHARS}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_address(item)
        return value

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            limits = parse_many(value)
        except ValueError:
            raise ValueError("expected a limit such as '60 per minute' or '10/second'") from None
        # "0 per minute" parses, and then refuses every request with 429: the API down, silently.
        # Turning limiting off is ORCH_RATE_LIMIT_ENABLED=0.
        if any(limit.amount < 1 for limit in limits):
            raise ValueError("every limit must allow at least 1 request (ORCH_RATE_LIMIT_ENABLED=0 turns limiting off)")
        return value

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _check_storage_url(cls, value: str) -> str:
        value = value.strip()
        if value and urlsplit(value).scheme not in {"memory", "redis", "rediss"}:
            raise ValueError("expected memory://, redis://host:port/db or rediss://")
        return value

    @field_validator("otel_exporter_otlp_endpoint", "ollama_url", "openai_base_url")
    @classmethod
    def _check_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        if url:
            from app.db.connection import postgres_dsn

            postgres_dsn(url)
        return SecretStr(url)

    @field_validator("principals")
    @classmethod
    def _check_principals(cls, value: SecretStr) -> SecretStr:
        parse_principals(value.get_secret_value())
        return value

    # --- agents and routing: paths and flag combinations --------------------------------------
    @field_validator("agent_dir", "router_policy_path", "tool_policy_path", mode="before")
    @classmethod
    def _shipped_policy(cls, value: Any, info: ValidationInfo) -> Any:
        # An empty value (as in .env.example) means the files shipped with the service.
        if value is None or (isinstance(value, str) and not value.strip()):
            return {
                "agent_dir": SHIPPED_AGENT_DIR,
                "router_policy_path": SHIPPED_ROUTER_POLICY,
                "tool_policy_path": SHIPPED_TOOL_POLICY,
            }[str(info.field_name)]
        return value

    @field_validator("agent_dir", "router_policy_path", "intent_cache_db_path", "intent_hitl_db_path")
    @classmethod
    def _absolute_routing_paths(cls, value: Path) -> Path:
        # Relative paths resolve against the working directory, once, at startup.
        return value if value.is_absolute() else Path.cwd() / value

    @model_validator(mode="after")
    def _routing_modes(self) -> Settings:
        if self.intent_router_shadow and not self.intent_router_enabled:
            raise ValueError(
                "ORCH_INTENT_ROUTER_SHADOW=1 observes the intent router: it needs ORCH_INTENT_ROUTER_ENABLED=1"
            )
        if self.intent_router_enabled and self.orchestrator_mode != "advanced" and not self.intent_router_shadow:
            raise ValueError(
                "ORCH_INTENT_ROUTER_ENABLED=1 routes only with ORCH_ORCHESTRATOR_MODE=advanced "
                "(or set ORCH_INTENT_ROUTER_SHADOW=1 to observe it beside the basic path)"
            )
        if self.semantic_router_enabled and self.orchestrator_mode != "advanced" and not self.intent_router_shadow:
            raise ValueError(
                "ORCH_SEMANTIC_ROUTER_ENABLED=1 routes only with ORCH_ORCHESTRATOR_MODE=advanced "
                "(or with ORCH_INTENT_ROUTER_SHADOW=1 to observe it beside the basic path)"
            )
        return self

    # --- tools -----------------------------------------------------------------------------
    @field_validator("tool_policy_path", "tool_approval_db_path")
    @classmethod
    def _absolute_tool_paths(cls, value: Path) -> Path:
        return value if value.is_absolute() else Path.cwd() / value

    @field_validator("memory_db_path")
    @classmethod
    def _absolute_memory_path(cls, value: Path) -> Path:
        return value if value.is_absolute() else Path.cwd() / value

    @field_validator("memory_write_policy", mode="before")
    @classmethod
    def _lower_policy(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().lower() or None
        return value

    @model_validator(mode="after")
    def _memory_modes(self) -> Settings:
        if self.memory_min_chars > self.memory_max_chars:
            raise ValueError("ORCH_MEMORY_MIN_CHARS must not exceed ORCH_MEMORY_MAX_CHARS")
        return self

    @field_validator("tool_web_search_url")
    @classmethod
    def _check_search_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        return value

    @field_validator("sandbox_image")
    @classmethod
    def _check_sandbox_image(cls, value: str) -> str:
        # Empty, Docker would be asked for an image named "" and /ready would blame the daemon.
        value = value.strip()
        if not value or any(char.isspace() for char in value):
            raise ValueError("expected an image name such as orchestrators-sandbox:1 (no spaces)")
        return value

    @field_validator("sandbox_docker_url")
    @classmethod
    def _check_docker_url(cls, value: str) -> str:
        value = value.strip()
        if value and urlsplit(value).scheme not in {"unix", "tcp", "http", "https", "ssh"}:
            raise ValueError("expected unix:///path/to/docker.sock, tcp://host:port, http(s):// or ssh://")
        return value

    @model_validator(mode="after")
    def _tools_guard(self) -> Settings:
        approver = self.approver_token.get_secret_value()
        if approver:
            others = {
                self.bearer_token.get_secret_value(),
                *parse_principals(self.principals.get_secret_value()).values(),
            }
            if approver in others:
                raise ValueError(
                    "ORCH_APPROVER_TOKEN must differ from ORCH_BEARER_TOKEN and from every ORCH_PRINCIPALS token "
                    "(whoever asks to run a tool must not be able to approve it)"
                )
            if self.env == "production" and (approver.strip().lower() in PLACEHOLDER_TOKENS or len(approver) < 16):
                raise ValueError("ORCH_ENV=production refuses a placeholder or short ORCH_APPROVER_TOKEN")
        return self

    @model_validator(mode="after")
    def _production_guard(self) -> Settings:
        if self.env != "production":
            return self
        token = self.bearer_token.get_secret_value()
        if not self.require_bearer:
            raise ValueError("ORCH_ENV=production refuses to start with ORCH_REQUIRE_BEARER=0")
        if not token:
            raise ValueError("ORCH_ENV=production requires ORCH_BEARER_TOKEN to be set")
        if token.strip().lower() in PLACEHOLDER_TOKENS or len(token) < 16:
            raise ValueError(
                "ORCH_ENV=production refuses a placeholder or short ORCH_BEARER_TOKEN "
                "(use at least 16 random characters, e.g. `openssl rand -hex 32`)"
            )
        if self.rate_limit_enabled and not self.rate_limit_storage_url:
            raise ValueError(
                "ORCH_RATE_LIMIT_STORAGE_URL is required in production when rate limiting is enabled "
                "(e.g. redis://127.0.0.1:6379/0, or memory:// for a single process)"
            )
        return self

    # --- derived values -------------------------------------------------------------------
    @property
    def auth_required(self) -> bool:
        """Production always requires the bearer, whatever ORCH_REQUIRE_BEARER says."""
        return self.require_bearer or self.env == "production"

    @property
    def rate_limit_storage(self) -> str:
        return self.rate_limit_storage_url or "memory://"

    @property
    def memory_capture(self) -> bool:
        """Capture is on with memory unless ORCH_MEMORY_CAPTURE_ENABLED=0 says otherwise."""
        return self.memory_enabled and self.memory_capture_enabled is not False

    @property
    def memory_policy(self) -> Literal["off", "strict", "capture_only"]:
        """ORCH_MEMORY_WRITE_POLICY, or ``strict`` when it is not set."""
        return self.memory_write_policy or "strict"


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def is_bind_host(value: str) -> bool:
    """An IP address, or a host name by RFC 1123 whose last label is not all digits (so a
    mistyped address such as ``999.1.1.1`` or ``10.0.0`` is not taken for a name to look up)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return True
    labels = value.removesuffix(".").split(".")
    return 0 < len(value) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


_RESERVED_PRINCIPALS = frozenset({OWNER_ID, APPROVER_ID, ANONYMOUS_ID})


def parse_principals(raw: str) -> dict[str, str]:
    """Parse ``name=token,name2=token2`` into ``{name: token}``; raise ValueError when malformed."""
    result: dict[str, str] = {}
    for pair in raw.split(","):
        if not pair.strip():
            continue
        name, sep, token = pair.partition("=")
        name, token = name.strip(), token.strip()
        if not sep or not name or not token:
            raise ValueError("expected name=token pairs separated by commas")
        if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
            raise ValueError(f"principal name {name!r} must be letters, digits, '-' or '_'")
        if name.lower() in _RESERVED_PRINCIPALS:
            # Memories, receipts and the ledger are scoped by the name alone: a principal named
            # "owner" would be the owner.
            raise ValueError(f"principal name {name!r} is reserved (owner, approver, anonymous)")
        if name in result:
            raise ValueError(f"principal {name!r} is listed twice")
        result[name] = token
    return result


class ConfigError(Exception):
    """A configuration problem, already phrased as the one line the operator should read."""


def redact_url(value: str) -> str:
    """``value`` with what may be a credential replaced by ``***``: the password of its userinfo
    (everything between the first ``:`` and the last ``@`` before the path's end) and its query
    string and fragment. Deliberately crude, because a value that failed validation may not parse
    as a URL: ``u:pa/ss@host`` hides ``pa/ss`` too."""
    head, cut = value, False
    for mark in ("?", "#"):
        head, found, _ = head.partition(mark)
        cut = cut or bool(found)
    scheme, sep, rest = head.partition("://")
    if not sep:
        scheme, rest = "", head
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.partition(':')[0]}:***@{host}"
    return f"{scheme}{sep}{rest}" + ("?***" if cut else "")


def describe_validation_error(error: ValidationError) -> str:
    """Turn pydantic's report into one line per problem, naming the ORCH_ flag and its value."""
    lines = []
    for item in error.errors():
        loc = item.get("loc") or ()
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        if not loc:
            lines.append(message)
            continue
        field = str(loc[0])
        flag = f"ORCH_{field.upper()}"
        if field in _SECRET_FIELDS:
            lines.append(f"{flag}: {message}")
        else:
            value = item.get("input")
            if field in URL_FIELDS and isinstance(value, str):
                value = redact_url(value)
            lines.append(f"{flag}={value!r}: {message}")
    return "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and ``.env``) once. Raise :class:`ConfigError` with a clear line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {describe_validation_error(exc)}") from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def exit_on_config_error(error: ConfigError) -> None:
    """Print the one-line reason and stop the process (no traceback)."""
    print(f"orchestrators: {error}", file=sys.stderr, flush=True)
    raise SystemExit(2)
