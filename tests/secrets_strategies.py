"""Hypothesis strategies: a secret of every kind the scrubber knows, written the ways people write
them (random values, separators, casing, quoting, JSON / YAML / .env / HTTP / CLI shapes),
embedded in varied text; and plain sentences that only sound like secrets.

Each strategy draws ``(text, secret)``: ``text`` is what a caller would paste, ``secret`` the part
that must never be kept or forwarded (the value, not the key before it).
"""

from __future__ import annotations

import base64
import string

from hypothesis import strategies as st

from app.memory.gate import INTENT_PHRASES
from app.scrub import SECRET_KINDS as SCRUBBER_KINDS

ALNUM = string.ascii_letters + string.digits
TOKEN = ALNUM + "_-"
SYMBOLS = "!#%^*~+-_.@$&?"


def chars(alphabet: str, low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=low, max_size=high)


@st.composite
def generated(draw: st.DrawFn, low: int = 3, high: int = 8, symbols: bool = True) -> str:
    """A value as a generator makes it: upper, lower and digits interleaved (so even the smallest
    example hypothesis shrinks to is no word, no number and no run of one character), with a
    symbol inside now and then. Between ``3 * low`` and ``3 * high`` characters (plus symbols)."""
    size = draw(st.integers(low, high))
    upper = draw(st.lists(st.sampled_from(string.ascii_uppercase), min_size=size, max_size=size, unique=True))
    lower = draw(st.lists(st.sampled_from(string.ascii_lowercase), min_size=size, max_size=size, unique=True))
    digits = draw(st.lists(st.sampled_from(string.digits), min_size=size, max_size=size, unique=size <= 10))
    parts = [u + lo + d for u, lo, d in zip(upper, lower, digits, strict=True)]
    if symbols and draw(st.booleans()):
        at = draw(st.integers(1, len(parts)))
        parts.insert(at, draw(st.sampled_from(SYMBOLS)))
    return "".join(parts)


def _private_key() -> st.SearchStrategy[tuple[str, str]]:
    kinds = st.sampled_from(["RSA ", "EC ", "OPENSSH ", "DSA ", "ENCRYPTED ", ""])
    body = st.builds(lambda a, b: a + "\n" + b, generated(6, 10, symbols=False), generated(6, 10, symbols=False))
    return st.builds(
        lambda k, b: (f"-----BEGIN {k}PRIVATE KEY-----\n{b}\n-----END {k}PRIVATE KEY-----", b.split("\n")[0]),
        kinds,
        body,
    )


def _prefixed(prefix: st.SearchStrategy[str], low: int) -> st.SearchStrategy[tuple[str, str]]:
    """A token shape: a fixed prefix and a generated tail of at least ``low`` characters."""
    return st.builds(lambda p, tail: (p + tail,) * 2, prefix, generated(low // 3 + 1, low // 3 + 4, symbols=False))


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# Key words of key/value pairs, as they appear inside keys of every style.
KEY_WORDS = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "client_secret",
    "credential",
    "credentials",
    "auth",
    "authorization",
    "passphrase",
]
KEY_PREFIXES = ["", "db", "aws", "my", "x", "google_client", "app", "github", "stripe", "smtp", "auth"]


@st.composite
def credential_key(draw: st.DrawFn) -> str:
    """A key naming a credential: any prefix, separator and case (DB_PASSWORD, dbPassword, x-api-key)."""
    word = draw(st.sampled_from(KEY_WORDS))
    prefix = draw(st.sampled_from(KEY_PREFIXES))
    style = draw(st.sampled_from(["snake", "upper", "kebab", "camel", "dotted", "plain"]))
    words = ([prefix] if prefix else []) + word.split("_")
    if style == "snake":
        return "_".join(words)
    if style == "upper":
        return "_".join(words).upper()
    if style == "kebab":
        return "-".join(words)
    if style == "dotted":
        return ".".join(words)
    if style == "camel":
        return words[0] + "".join(w.capitalize() for w in words[1:])
    return "".join(words)  # dbpassword, apikey


@st.composite
def credential_assignment(draw: st.DrawFn) -> tuple[str, str]:
    key = draw(credential_key())
    value = draw(generated())
    shape = draw(st.sampled_from(["pair", "json", "escaped_json", "yaml", "env", "cli", "python", "ruby", "header"]))
    if shape == "pair":
        sep = draw(st.sampled_from(["=", ": ", " = ", ":", " => ", " := ", "= "]))
        quote = draw(st.sampled_from(["", "'", '"']))
        return f"{key}{sep}{quote}{value}{quote}", value
    if shape == "json":
        space = draw(st.sampled_from(["", " "]))
        return f'{{"service": "billing", "{key}":{space}"{value}", "port": 5432}}', value
    if shape == "escaped_json":
        return f'{{\\"{key}\\": \\"{value}\\"}}', value
    if shape == "yaml":
        return f"service: billing\ndb:\n  host: db.internal\n  {key}: {value}\n  port: 5432", value
    if shape == "env":
        export = draw(st.sampled_from(["", "export "]))
        quote = draw(st.sampled_from(["", '"']))
        return f"APP_ENV=prod\n{export}{key.upper()}={quote}{value}{quote}\nPORT=8080", value
    if shape == "cli":
        return f"deploy --{key.replace('_', '-').lower()}={value} --verbose", value
    if shape == "python":
        return f'client = Client({key.lower()}="{value}")', value
    if shape == "ruby":
        return f"config = {{ '{key}' => '{value}' }}", value
    scheme = draw(st.sampled_from(["Bearer ", "Token ", ""]))
    return f"Authorization: {scheme}{value}", value


@st.composite
def credential_phrase(draw: st.DrawFn) -> tuple[str, str]:
    """'my password is X', 'the api key for staging was: X'."""
    owner = draw(st.sampled_from(["my", "the", "our", "your", "My", "The"]))
    word = draw(
        st.sampled_from(["password", "passphrase", "token", "api key", "secret", "access key", "Password", "API key"])
    )
    target = draw(st.sampled_from(["", " for the db", " for staging", " to the wiki", " of admin@example.com"]))
    verb = draw(st.sampled_from(["is", "was", "is now", "is:"]))
    value = draw(generated())
    quote = draw(st.sampled_from(["", "", '"', "'"]))
    end = draw(st.sampled_from(["", ".", "!", ","]))
    return f"{owner} {word}{target} {verb} {quote}{value}{quote}{end}", value


@st.composite
def basic_auth(draw: st.DrawFn) -> tuple[str, str]:
    user = draw(st.sampled_from(["admin", "deploy", "jane", "svc-backup"]))
    encoded = base64.b64encode(f"{user}:{draw(generated())}".encode()).decode()
    shape = draw(st.sampled_from(["Authorization: Basic {v}", "basic {v}", "curl -H 'Authorization: basic {v}'"]))
    return shape.format(v=encoded), encoded


@st.composite
def url_password(draw: st.DrawFn) -> tuple[str, str]:
    scheme = draw(st.sampled_from(["postgres", "postgresql+asyncpg", "redis", "https", "mongodb+srv", "amqp", "ftp"]))
    user = draw(st.sampled_from(["admin", "app", "u", "service_user"]))
    password = draw(generated(symbols=False))
    host = draw(st.sampled_from(["db.internal:5432/app", "localhost", "cache:6379/0", "example.com/path?x=1"]))
    return f"{scheme}://{user}:{password}@{host}", password


@st.composite
def high_entropy(draw: st.DrawFn) -> tuple[str, str]:
    """A long generated string beside a key word, in no key/value form."""
    value = draw(generated(6, 10, symbols=False))
    noun = draw(st.sampled_from(["aws key", "secret", "token", "api key", "credential", "deploy key"]))
    if draw(st.booleans()):
        lead = draw(st.sampled_from(["here is the {}", "my {}", "the {} I got:", "{}"])).format(noun)
        return f"{lead} {value}{draw(st.sampled_from(['', ' thanks', ' (do not share)']))}", value
    return f"{value} is the {noun}", value


SECRET_KINDS: dict[str, st.SearchStrategy[tuple[str, str]]] = {
    "private_key": _private_key(),
    "bearer": st.builds(
        lambda word, token: (f"{word} {token}", token),
        st.sampled_from(["Bearer", "bearer", "BEARER"]),
        st.builds(lambda a, b: a + b, generated(symbols=False), chars(ALNUM + "._~+/-", 0, 20)),
    ),
    "basic_auth": basic_auth(),
    "url_password": url_password(),
    "jwt": st.builds(
        lambda header, claims, signature: (f"{header}.{claims}.{signature}",) * 2,
        st.sampled_from(['{"alg":"HS256","typ":"JWT"}', '{"alg":"RS256"}', '{"typ":"JWT","alg":"none"}']).map(_b64url),
        generated().map(lambda sub: _b64url(f'{{"sub":"{sub}","iat":1516239022}}')),
        generated(4, 14, symbols=False),
    ),
    "openai_key": _prefixed(st.sampled_from(["sk-", "sk-proj-", "sk-ant-api03-"]), 24),
    "stripe_key": _prefixed(st.sampled_from(["sk_live_", "rk_live_", "sk_test_", "pk_live_"]), 24),
    "github_token": _prefixed(st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"]), 36),
    "gitlab_token": _prefixed(st.just("glpat-"), 20),
    "slack_token": _prefixed(st.sampled_from(["xoxb-", "xoxp-", "xoxa-", "xoxs-", "xoxr-", "xoxe-"]), 24),
    "aws_access_key": st.builds(
        lambda p, s: (p + s,) * 2,
        st.sampled_from(["AKIA", "ASIA"]),
        chars(string.ascii_uppercase + string.digits, 16, 16),
    ),
    "google_api_key": st.builds(lambda s: ("AIza" + s,) * 2, chars(TOKEN, 35, 35)),
    "huggingface_token": _prefixed(st.just("hf_"), 34),
    "npm_token": _prefixed(st.just("npm_"), 36),
    "pypi_token": _prefixed(st.just("pypi-AgEIcHlwaS5vcmc"), 40),
    "credential_assignment": credential_assignment(),
    "credential_phrase": credential_phrase(),
    "high_entropy": high_entropy(),
}
assert set(SECRET_KINDS) == set(SCRUBBER_KINDS), "a secret kind of app/scrub.py has no strategy here"

# Text around the secret: words, digits, punctuation, non-ASCII letters, newlines.
FILLER = st.text(
    alphabet=st.sampled_from(list(string.ascii_letters + string.digits + " .,;!?()'\"\n\t") + list("éüßøçñ漢字")),
    max_size=40,
)

# Words around a plain sentence: random characters could themselves form a generated-looking run
# beside a key word, which is a secret by design.
PROSE = st.lists(
    st.sampled_from(["the", "a", "we", "deploy", "on", "Friday;", "see", "notes", "(v2)", "and", "call", "me"]),
    max_size=8,
).map(" ".join)


@st.composite
def message_with_secret(draw: st.DrawFn) -> tuple[str, str, str]:
    """(message, secret, kind): a message with a secret, mostly one that would be stored under
    ``strict`` but for the secret."""
    kind = draw(st.sampled_from(sorted(SECRET_KINDS)))
    text, secret = draw(SECRET_KINDS[kind])
    phrase = draw(st.sampled_from(INTENT_PHRASES))
    before, after = draw(FILLER), draw(FILLER)
    layout = draw(st.integers(0, 3))
    if layout == 0:
        message = f"{phrase}: {before} {text} {after}"
    elif layout == 1:
        message = f"{before} {text} {after}. Please {phrase}."
    elif layout == 2:
        message = f"{phrase.capitalize()} {before}\n{text}\n{after}"
    else:  # no intent phrase at all: still reported as sensitive
        message = f"{before} {text} {after}"
    return message, secret, kind


# Sentences that talk about credentials without holding one: refusing or redacting them would
# lose ordinary memories and mangle ordinary answers.
PLAIN_SENTENCES = [
    "my password manager is great",
    "I forgot my password again, how do I reset it?",
    "the password reset link expired",
    "use a passkey instead of a password",
    "the token ring network was popular in the eighties",
    "tokens per second went up after the upgrade",
    "max_tokens: 4096",
    "prompt_tokens=31 completion_tokens=12",
    "author: Jane",
    "Author: Jane Austen",
    "the secretary: Jane",
    "secret santa is on Friday",
    "OAuth: enabled",
    "auth: required",
    "authentication: ldap",
    "the auth flow uses authorization codes",
    "The Authorization header is missing",
    "the token is valid for an hour",
    "my password is incorrect",
    "Basic instructions for the bearer instrument",
    "Bearer bonds are risky",
    "PWD=/home/jane",
    "password: ${DB_PASSWORD}",
    "password: <your password>",
    "token: none",
    "secret: false",
    "def get_token(self):",
    "token = tokenizer.encode(text)",
    "password = input('Password: ')",
    'api_key = os.getenv("OPENAI_API_KEY")',
    "token=self.token",
    "client = Client(api_key=api_key)",
    "headers = {'Authorization': f'Bearer {token}'}",
    "if not password: raise ValueError('empty password')",
    "the key insight: MyVeryLongClassName2024 does the work",
    "the api key lives in the AWS_SECRET_ACCESS_KEY variable",
    "rotate the access keys every 90 days",
    "see https://example.com/docs for the token endpoint",
    "keyboard shortcuts: ctrl-k opens the palette",
    "remember that my dentist appointment is on Tuesday at 3pm",
    "remember that the deploy key is stored in the vault, not in git",
]
