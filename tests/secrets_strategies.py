"""Hypothesis strategies: a secret of every kind the scrubber knows, embedded in varied text."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from app.memory.gate import INTENT_PHRASES
from app.scrub import SECRET_PATTERNS

ALNUM = string.ascii_letters + string.digits
TOKEN = ALNUM + "_-"


def chars(alphabet: str, low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=low, max_size=high)


def _private_key() -> st.SearchStrategy[str]:
    kinds = st.sampled_from(["RSA ", "EC ", "OPENSSH ", "DSA ", ""])
    body = chars(ALNUM + "+/=\n", 20, 80)
    return st.builds(lambda k, b: f"-----BEGIN {k}PRIVATE KEY-----\n{b}\n-----END {k}PRIVATE KEY-----", kinds, body)


SECRET_KINDS: dict[str, st.SearchStrategy[str]] = {
    "private_key": _private_key(),
    "bearer": st.builds(
        lambda word, token: f"{word} {token}",
        st.sampled_from(["Bearer", "bearer", "BEARER"]),
        chars(ALNUM + "._~+/=-", 8, 40),
    ),
    "jwt": st.builds(
        lambda a, b, c: f"eyJ{a}.{b}.{c}", chars(TOKEN, 10, 30), chars(TOKEN, 10, 30), chars(TOKEN, 10, 30)
    ),
    "openai_key": st.builds(lambda s: "sk-" + s, chars(TOKEN, 20, 48)),
    "stripe_key": st.builds(
        lambda p, env, s: f"{p}_{env}_{s}",
        st.sampled_from(["sk", "rk", "pk"]),
        st.sampled_from(["live", "test"]),
        chars(ALNUM, 16, 32),
    ),
    "github_token": st.one_of(
        st.builds(lambda p, s: p + s, st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]), chars(ALNUM, 20, 40)),
        st.builds(lambda s: "github_pat_" + s, chars(ALNUM + "_", 22, 60)),
    ),
    "slack_token": st.builds(lambda p, s: f"xox{p}-{s}", st.sampled_from(list("abposr")), chars(ALNUM + "-", 10, 40)),
    "aws_access_key": st.builds(
        lambda p, s: p + s, st.sampled_from(["AKIA", "ASIA"]), chars(string.ascii_uppercase + string.digits, 16, 16)
    ),
    "google_api_key": st.builds(lambda s: "AIza" + s, chars(TOKEN, 35, 35)),
    "credential_assignment": st.builds(
        lambda name, sep, quote, value: f"{name}{sep}{quote}{value}{quote}",
        st.sampled_from(
            [
                "api_key",
                "apikey",
                "API-KEY",
                "password",
                "passwd",
                "secret",
                "secret_key",
                "access_token",
                "auth-token",
                "token",
                "TOKEN",
                "refresh_token",
                "my_api-token",
                "client_secret",
            ]
        ),
        st.sampled_from(["=", ": ", " = ", ":"]),
        st.sampled_from(["", "'", '"']),
        chars(ALNUM + "!@#$%^&*()[]{}<>?/|~", 6, 24),
    ),
}
assert set(SECRET_KINDS) == set(SECRET_PATTERNS), "a secret kind of app/scrub.py has no strategy here"

# Text around the secret: words, digits, punctuation, non-ASCII letters, newlines.
FILLER = st.text(
    alphabet=st.sampled_from(list(string.ascii_letters + string.digits + " .,;!?()'\"\n\t") + list("éüßøçñ漢字")),
    max_size=40,
)


@st.composite
def message_with_secret(draw: st.DrawFn) -> tuple[str, str, str]:
    """(message, secret, kind): a message with a secret, mostly one that would be stored under
    ``strict`` but for the secret."""
    kind = draw(st.sampled_from(sorted(SECRET_KINDS)))
    secret = draw(SECRET_KINDS[kind])
    phrase = draw(st.sampled_from(INTENT_PHRASES))
    before, after = draw(FILLER), draw(FILLER)
    layout = draw(st.integers(0, 3))
    if layout == 0:
        message = f"{phrase}: {before} {secret} {after}"
    elif layout == 1:
        message = f"{before} {secret} {after}. Please {phrase}."
    elif layout == 2:
        message = f"{phrase.capitalize()} {before}\n{secret}\n{after}"
    else:  # no intent phrase at all: still reported as sensitive
        message = f"{before} {secret} {after}"
    return message, secret, kind
