"""The gate's decision without I/O: taxonomy, normalisation, lead-in removal, and (hypothesis)
no secret of any kind is ever allowed, no email survives into an allowed memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.memory.gate import GateConfig, decide, find_intent, normalise, strip_lead_in
from app.scrub import find_secret
from tests.secrets_strategies import FILLER, message_with_secret

STRICT = GateConfig(
    enabled=True, capture_enabled=True, write_policy="strict", max_chars=500, min_chars=10, redact_pii=True
)
CAPTURE = GateConfig(
    enabled=True, capture_enabled=True, write_policy="capture_only", max_chars=500, min_chars=10, redact_pii=True
)


@pytest.mark.parametrize(
    ("config", "text", "reason", "content"),
    [
        (
            GateConfig(False, True, "strict", 500, 10, True),
            "remember that x is 12345678",
            "deny:feature_disabled",
            None,
        ),
        (
            GateConfig(True, False, "strict", 500, 10, True),
            "remember that x is 12345678",
            "deny:feature_disabled",
            None,
        ),
        (
            GateConfig(True, True, "off", 500, 10, True),
            "remember that x is 12345678",
            "deny:policy_write_disabled",
            None,
        ),
        (STRICT, "just chatting about the weather", "deny:no_explicit_intent", None),
        (STRICT, "Remember this: ok", "deny:scrubbed_too_short", None),
        (STRICT, "remember that sk-" + "a" * 24, "deny:sensitive_content", None),
        (STRICT, "my key is sk-" + "a" * 24, "deny:sensitive_content", None),  # no phrase: still reported
        (STRICT, "Remember that:  the  wifi\x00name is\tBlueFox ", "allow:explicit_intent", "the wifi name is BlueFox"),
        (
            STRICT,
            "Hey, please DON\u2019T FORGET \u2013 the bins go out on Tuesday",
            "allow:explicit_intent",
            "the bins go out on Tuesday",
        ),
        (
            STRICT,
            "The bins go out on Tuesday, keep in mind.",
            "allow:explicit_intent",
            "The bins go out on Tuesday, keep in mind.",
        ),
        (STRICT, "I can't remember that film's title, can you help?", "deny:no_explicit_intent", None),
        (STRICT, "I remember that we met in Lyon last spring", "deny:no_explicit_intent", None),
        (
            STRICT,
            "I remember that film, but please remember this: Lyon is where we met",
            "allow:explicit_intent",
            "I remember that film, but please remember this: Lyon is where we met",
        ),
        (STRICT, "Can you remember that the boiler code is 1234", "allow:explicit_intent", "the boiler code is 1234"),
        (CAPTURE, "The bins go out on Tuesday", "allow:capture_only", "The bins go out on Tuesday"),
        (CAPTURE, "short", "deny:scrubbed_too_short", None),
        (STRICT, "remember that mail me at joe@example.org", "allow:explicit_intent", "mail me at [REDACTED]"),
    ],
)
def test_decision_table(config: GateConfig, text: str, reason: str, content: str | None) -> None:
    verdict = decide(text, config)
    assert verdict.reason == reason
    assert verdict.content == content


def test_explicit_posts_need_no_phrase_and_are_cut_to_max_chars() -> None:
    verdict = decide("the garage code changes monthly " * 40, STRICT, explicit=True)
    assert verdict.reason == "allow:explicit_intent" and verdict.content is not None
    assert len(verdict.content) <= 500


def test_helpers() -> None:
    assert normalise(" a\x07\x1b b \n\n c ") == "a b c"
    assert find_intent("xx MAKE A NOTE yy") == (3, 14)
    assert find_intent("nothing here") is None
    assert strip_lead_in("Could you please remember this - X is 5") == "X is 5"
    long_lead = "the code is 5, remember this: X"
    assert strip_lead_in(long_lead) == long_lead


@settings(max_examples=300, deadline=None)
@given(message_with_secret())
def test_no_secret_of_any_kind_is_ever_allowed(case: tuple[str, str, str]) -> None:
    message, _secret, kind = case
    assert find_secret(message) is not None, kind
    for config in (STRICT, CAPTURE):
        verdict = decide(message, config)
        assert verdict.reason == "deny:sensitive_content", (kind, message)
        assert verdict.content is None
        assert decide(message, config, explicit=True).content is None


@settings(max_examples=200, deadline=None)
@given(
    FILLER,
    st.from_regex(r"[a-z][a-z0-9._]{0,10}@[a-z]{2,10}\.(com|org|io|co\.uk)", fullmatch=True),
    FILLER,
)
def test_emails_never_survive_into_a_stored_memory(before: str, email: str, after: str) -> None:
    verdict = decide(f"{before} {email} {after} and more words", CAPTURE)
    assert verdict.content is None or email not in verdict.content
