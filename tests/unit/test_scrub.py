"""The scrubber's key patterns: a key glued after an underscore is still a key; a key-like piece
inside a longer word is not."""

from __future__ import annotations

import pytest

from app.scrub import TRUNCATED_SUFFIX, cap_text, find_secret, redact_text

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
