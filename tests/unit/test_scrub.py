"""The scrubber: every shape of secret is found and only its value replaced; a key glued after an
underscore is still a key, a key-like piece inside a longer word is not; plain sentences about
passwords and tokens are left alone; hostile inputs cost linear time."""

from __future__ import annotations

import logging
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import InvalidRequest
from app.observability.logging import ACCESS_LOGGER, JsonFormatter, PlainFormatter
from app.scrub import TRUNCATED_SUFFIX, cap_text, find_secret, is_sensitive_key, redact_text, scrub
from tests.secrets_strategies import PLAIN_SENTENCES, PROSE, message_with_secret

GLUED = [
    ("DEPLOY_ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5", "github_token"),
    ("key_AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
    ("my_sk-proj-abcdefghijklmnopqrstuvwx", "openai_key"),
    ("cfg_xoxb-1234567890-abcdefghij", "slack_token"),
    ("gcp_AIzaSyA1234567890abcdefghijklmnopqrstuv", "google_api_key"),
    ("x_eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTYifQ.abcdefghijklmnopqrst", "jwt"),
    ("stripe_sk_live_abcdefghijklmnop1234", "stripe_key"),
]


@pytest.mark.parametrize(("text", "kind"), GLUED)
def test_a_key_glued_after_an_underscore_is_found_and_redacted(text: str, kind: str) -> None:
    assert find_secret(f"the value is {text} here") == kind
    redacted, count = redact_text(f"the value is {text} here", pii=False)
    assert count == 1 and "[REDACTED]" in redacted


@pytest.mark.parametrize("text", ["the task-list-abcdefghijklmnopqrstuvwx is long", "AKIAIOSFODNN7EXAMPLEX9"])
def test_key_shapes_inside_longer_words_are_left_alone(text: str) -> None:
    assert find_secret(text) is None


@pytest.mark.parametrize(
    ("cap", "shown"),
    [
        (0, "orchestrators-demo"),  # no cap
        (18, "orchestrators-demo"),  # fits
        (17, "orc" + TRUNCATED_SUFFIX),
        (15, "o" + TRUNCATED_SUFFIX),
        (14, "orchestrators-"),  # the suffix would be all there is: a plain prefix instead
        (8, "orchestr"),
        (1, "o"),
    ],
)
def test_cap_text_never_exceeds_the_cap_and_always_keeps_some_text(cap: int, shown: str) -> None:
    text, cut = cap_text("orchestrators-demo", cap)
    assert text == shown and cut is (shown != "orchestrators-demo")


# The shapes that got past the scrubber: a key word glued after "_" (no \b), a quote between the
# key and the colon, plain speech, an HTTP Basic header.
ESCAPED_BEFORE = [
    ("aws_secret_access_key=wJalrXUtnFEMIK7MDENGbPxRfiCY", "wJalrXUtnFEMIK7MDENGbPxRfiCY"),
    ("DB_PASSWORD=Hunter2Xyz99", "Hunter2Xyz99"),
    ("GOOGLE_CLIENT_SECRET=abcdef123", "abcdef123"),
    ('{"password": "Hunter2Xyz99"}', "Hunter2Xyz99"),
    ("my password is Hunter2Xyz99", "Hunter2Xyz99"),
    ("Authorization: Basic YWRtaW46cHc=", "YWRtaW46cHc="),
    ("the token is eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIz", "eyJhbGciOiJIUzI1NiJ9"),
    ("postgres://app:s3cr3tPw@db.internal:5432/app", "s3cr3tPw"),
    ("here is the aws key wJalrXUtnFEMIK7MDENGbPxRfiCY, thanks", "wJalrXUtnFEMIK7MDENGbPxRfiCY"),
    ("glpat-abcdefghij1234567890", "glpat-abcdefghij1234567890"),
    ("hf_abcdefghijklmnopqrstuvwxyz123456", "hf_abcdefghijklmnopqrstuvwxyz123456"),
    ("npm_abcdefghijklmnopqrstuvwxyz1234567890", "npm_abcdefghijklmnopqrstuvwxyz1234567890"),
    ("pypi-AgEIcHlwaS5vcmcCJDU3ZjQ5YjYwLWRiYzQtNDU2NS1iNjY2", "pypi-AgEIcHlwaS5vcmcCJDU3ZjQ5YjYwLWRiYzQtNDU2NS1iNjY2"),
    ('{\\"api_key\\": \\"Zx9Qw8Er7Ty6\\"}', "Zx9Qw8Er7Ty6"),
    ("config = { 'client_secret' => 'Zx9Qw8Er7Ty6' }", "Zx9Qw8Er7Ty6"),
]


@pytest.mark.parametrize(("text", "secret"), ESCAPED_BEFORE)
def test_each_shape_is_found_and_its_value_removed(text: str, secret: str) -> None:
    assert find_secret(f"note: {text} ok") is not None
    redacted, count = redact_text(f"note: {text} ok", pii=False)
    assert count >= 1 and secret not in redacted


@pytest.mark.parametrize("value", ["!Hunter2x", "@dm1nPass", "#Qw3rty99", "$ecretPw7", "&Zx9Qw8Er"])
def test_a_password_may_start_with_a_symbol(value: str) -> None:
    assert redact_text(f"DB_PASSWORD={value}", pii=False)[0] == "DB_PASSWORD=[REDACTED]"


@pytest.mark.parametrize(
    "value", ["$DB_PASSWORD", "${DB_PASSWORD}", "$(cat /run/secrets/db)", "%s", "{{ secrets.DB }}"]
)
def test_references_to_a_password_are_not_one(value: str) -> None:
    assert find_secret(f"password: {value}") is None


def test_the_key_is_kept_and_only_the_value_replaced() -> None:
    assert redact_text("DB_PASSWORD=Hunter2Xyz99 PORT=5432", pii=False)[0] == "DB_PASSWORD=[REDACTED] PORT=5432"
    assert redact_text('{"password": "Hunter2Xyz99"}', pii=False)[0] == '{"password": "[REDACTED]"}'
    assert redact_text("Authorization: Basic YWRtaW46cHc=", pii=False)[0] == "Authorization: Basic [REDACTED]"


@pytest.mark.parametrize("sentence", PLAIN_SENTENCES)
def test_plain_sentences_are_neither_refused_nor_redacted(sentence: str) -> None:
    assert find_secret(sentence) is None
    assert redact_text(sentence, pii=False) == (sentence, 0)


@settings(max_examples=400, deadline=None)
@given(message_with_secret())
def test_every_generated_secret_is_found_and_removed(case: tuple[str, str, str]) -> None:
    message, secret, kind = case
    assert find_secret(message) is not None, (kind, message)
    redacted = redact_text(message, pii=True)[0]
    assert secret not in redacted, (kind, message, redacted)
    assert redact_text(redacted, pii=True)[0] == redacted  # what is redacted stays as it is
    assert find_secret(redacted) is None, (kind, redacted)
    # quoted inside other text, as an error message (repr) or a JSON document quotes it
    for quoted in (repr(message), orjson.dumps({"note": message}).decode()):
        assert secret not in redact_text(quoted, pii=True)[0], (kind, quoted)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PLAIN_SENTENCES), PROSE, PROSE)
def test_plain_sentences_in_any_surroundings_are_not_refused(sentence: str, before: str, after: str) -> None:
    assert find_secret(f"{before} {sentence} {after}") is None


HOSTILE = {
    "spaces after a key": "password" + " " * 100_000 + "x",
    "keys without values": "password=" * 11_000,
    "colons": "token:" * 16_000,
    "url without end": "a://" + "b:" * 50_000,
    "basic near-misses": "basic " * 16_000,
    "runs beside key words": ("key " + "aB3dE5fG7hJ9kL1m" * 2) * 2_800,
    "pem headers": "-----BEGIN PRIVATE KEY-----" * 3_700,
    "open quotes": 'password: "' * 9_000,
    "phone-ish": "+1 " * 33_000,
    "email-ish": "a." * 50_000 + "@",
    "phrase without value": "my password for " + "x " * 50_000,
    "one long run": "x" + "aB3" * 33_000,
    "unclosed jwt": "eyJ" + "a" * 100_000 + ".",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_inputs_of_100_kb_are_scanned_in_linear_time(name: str) -> None:
    text = HOSTILE[name]
    started = time.perf_counter()
    find_secret(text)
    redact_text(text, pii=True)
    scrub({"content": text}, pii=True)
    assert time.perf_counter() - started < 5.0  # generous: about 0.1 s here; backtracking took minutes


def test_a_lone_surrogate_does_not_break_the_scan() -> None:
    text = "bad \ud800 text DB_PASSWORD=Hunter2Xyz99 more \udfff"
    assert redact_text(text, pii=False)[0] == "bad \ud800 text DB_PASSWORD=[REDACTED] more \udfff"


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("DB_PASSWORD", True),
        ("x-api-key", True),
        ("aws_secret_access_key", True),
        ("bearer_token", True),
        ("Authorization", True),
        ("max_tokens", False),
        ("prompt_tokens", False),
        ("token_estimate", False),
        ("auth_required", False),
        ("author", False),
    ],
)
def test_sensitive_keys(key: str, sensitive: bool) -> None:
    assert is_sensitive_key(key) is sensitive
    cleaned = scrub({key: "Hunter2Xyz99", "other": 1}, pii=False)
    assert (cleaned[key] == "[REDACTED]") is sensitive


def _record(name: str, message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize("formatter", [JsonFormatter(), PlainFormatter()])
def test_a_log_line_never_carries_a_credential(formatter: logging.Formatter) -> None:
    # a library's record (a driver quoting a statement, a client quoting a URL) and our own extras
    line = formatter.format(
        _record("aiosqlite", "executing ('postgres://app:Hunter2Xyz99@db/app',)", api_key="Zx9Qw8Er7Ty6", n=3)
    )
    assert "Hunter2Xyz99" not in line and "Zx9Qw8Er7Ty6" not in line
    assert "postgres://app:[REDACTED]@db/app" in line and "3" in line


def test_the_access_log_is_written_as_built() -> None:
    # its fields come from route templates, statuses and sanitised ids: not scanned, one per request
    line = JsonFormatter().format(_record(ACCESS_LOGGER, "request", route="/v1/chat/completions", status=200))
    assert orjson.loads(line)["route"] == "/v1/chat/completions"


def test_an_error_envelope_never_carries_a_credential() -> None:
    error = InvalidRequest("Unknown argument 'DB_PASSWORD=Hunter2Xyz99'.", param="args.DB_PASSWORD=Hunter2Xyz99")
    body = error.body().decode()
    assert "Hunter2Xyz99" not in body
    assert orjson.loads(body)["error"]["param"] == "args.DB_PASSWORD=[REDACTED]"
