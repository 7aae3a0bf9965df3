"""Secret and personal-data scrubbing: one set of patterns for every place that keeps or forwards
caller text (receipts, memory and recall, the review queue, tool arguments and output, logs, error
messages).

Every pattern is matched by RE2 (linear time in the input, whatever the input): this runs on text
a caller wrote, for every receipt step, and a backtracking engine can be held for minutes by one
crafted message. All secret shapes are alternatives of one expression, so a string is scanned once
whatever the number of kinds; a match is then checked in Python (is the value a placeholder, a code
expression, a plain word?) and only a value that passes is replaced. What is detected, and what is
not, is written down in docs/threat-model.md.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

import re2  # google-re2; its types are in stubs/re2

REDACTED = "[REDACTED]"

# RE2 has no look-around. A shape that must not start inside a run of letters or digits (so
# "task-..." is not "sk-...") consumes the character before it instead; it may be an underscore,
# which \b would refuse ("DEPLOY_ghp_..."), or an escaped line break or tab (a repr or JSON text:
# "...\\nghp_..."). The value itself is the named group.
_START = r"(?:^|[^A-Za-z0-9]|\\[nrt])"

# Key words of a key/value pair. "Strong" ones name a credential whatever the value looks like;
# "weak" ones (token, auth) also name counts and switches ("token_limit: 4096", "auth: basic"), so
# their value must look generated (see _looks_generated).
_STRONG_WORDS = (
    r"password|passwd|passphrase|pwd|secret|credentials?|authorization|cookie"
    r"|api[ _.-]?key|apikey|access[ _.-]?key|private[ _.-]?key|client[ _.-]?secret"
)
_WEAK_WORDS = r"token|auth"
# After the key word the key may go on only with a separator, a digit or an upper-case letter
# (DB_PASSWORD_FILE, passwordHash, TOKEN2): "tokens", "tokenizer", "author", "secretary" are words.
_KEY_TAIL = r"(?:[_.-][A-Za-z0-9_.-]*|[A-Z0-9][A-Za-z0-9_.-]*)?"
# How a value is written after the key: JSON/YAML/.env/code/HTTP header (=, :, =>, :=), quoted
# or not, optionally with an HTTP auth scheme ("Authorization: Basic ...").
_ASSIGN = r"""["'\\]*[ \t]*(?:=>|:=|=|:)[ \t]*"""
_SCHEME = r"(?:(?i:basic|bearer|token|digest|negotiate)[ \t]+)?"


def _value(prefix: str, *, scheme: str = "", bare: str = r"""[^\s"'`,;\\]""") -> str:
    """A value: quoted, quoted with escaped quotes (a JSON string inside JSON, a repr: once or
    more, {\\"password\\": \\"...\\"}), or bare; each its own group, the quotes kept."""
    return (
        rf'''(?:\\+["'](?P<{prefix}_esc>[^"'\\\r\n]+)\\+["']|"(?P<{prefix}_dq>[^"\r\n]+)"'''
        rf"""|'(?P<{prefix}_sq>[^'\r\n]+)'|{scheme}(?P<{prefix}_bare>{bare}+))"""
    )


class _Kind(NamedTuple):
    pattern: str  # RE2 syntax; named groups "<kind>..." are the spans to replace
    markers: tuple[str, ...]  # lowercase substrings; a match is impossible without one of them


# Credential-looking values, by kind. Case-insensitive where the real format allows it.
_KINDS: dict[str, _Kind] = {
    "private_key": _Kind(
        r"(?P<private_key>-----BEGIN[ A-Z0-9]*PRIVATE KEY[ A-Z]*-----"
        # to the END line; a key cut before its END is redacted to the end of its base64 body
        r"(?:(?s:.*?)-----END[ A-Z0-9]*PRIVATE KEY[ A-Z]*-----|[A-Za-z0-9+/=\s:,-]*))",
        ("private key",),
    ),
    "jwt": _Kind(
        _START + r"(?P<jwt>eyJ[A-Za-z0-9_-]{8,}\."
        r"(?:eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*|[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}))",
        ("eyj",),
    ),
    "url_password": _Kind(
        r"(?i:[a-z][a-z0-9+.-]*)://[^\s:/@'\"<>]+:(?P<url_password>[^\s@/'\"<>]+)@",
        ("://",),
    ),
    "basic_auth": _Kind(_START + r"(?i:basic)[ \t]+(?P<basic_auth>[A-Za-z0-9+/]{4,}={0,2})", ("basic",)),
    "bearer": _Kind(_START + r"(?i:bearer)[ \t]+(?P<bearer>[A-Za-z0-9._~+/=-]{8,})", ("bearer",)),
    "aws_access_key": _Kind(
        _START + r"(?P<aws_access_key>(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16})\b", ("akia", "asia", "abia", "acca")
    ),
    "github_token": _Kind(
        _START + r"(?P<github_token>gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{22,})",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    "gitlab_token": _Kind(_START + r"(?P<gitlab_token>glpat-[A-Za-z0-9_-]{20,})", ("glpat-",)),
    "slack_token": _Kind(
        _START + r"(?P<slack_token>xox[abposre]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,})", ("xox", "xapp-")
    ),
    "stripe_key": _Kind(_START + r"(?P<stripe_key>(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,})", ("_live_", "_test_")),
    "google_api_key": _Kind(_START + r"(?P<google_api_key>AIza[0-9A-Za-z_-]{35})", ("aiza",)),
    "openai_key": _Kind(_START + r"(?P<openai_key>sk-[A-Za-z0-9_-]{20,})", ("sk-",)),
    "huggingface_token": _Kind(_START + r"(?P<huggingface_token>hf_[A-Za-z0-9]{30,})", ("hf_",)),
    "npm_token": _Kind(_START + r"(?P<npm_token>npm_[A-Za-z0-9]{30,})", ("npm_",)),
    "pypi_token": _Kind(_START + r"(?P<pypi_token>pypi-[A-Za-z0-9_-]{32,})", ("pypi-",)),
    "credential_assignment": _Kind(
        rf"(?P<key__assignment>(?i:{_STRONG_WORDS}|{_WEAK_WORDS}){_KEY_TAIL}){_ASSIGN}"
        + _value("credential_assignment", scheme=_SCHEME),
        ("pass", "pwd", "secret", "credential", "auth", "cookie", "key", "token"),
    ),
    "credential_phrase": _Kind(
        # "my password is X", "the token for staging was: X", "api key = X"
        _START + r"(?i:(?P<key__phrase>password|passwd|passphrase|passcode|pwd|secret(?: key)?|token"
        r"|api[ _-]?key|access[ _-]?key|private[ _-]?key|client[ _-]?secret|credentials?)"
        r"(?:[ \t]+(?:for|of|to|on|at|in)(?:[ \t]+[\w.@:/-]+){1,3}?)?[ \t]+(?:is now|is set to|is|was)[ \t]*:?[ \t]*)"
        + _value("credential_phrase", bare=r"""[^\s"'`<>\\]"""),
        ("pass", "pwd", "secret", "credential", "key", "token"),
    ),
}
# A long random-looking run of characters near a key word (checked in Python: entropy, mix).
HIGH_ENTROPY = "high_entropy"
_HIGH_ENTROPY_RUN = re2.compile(r"(?:^|[^A-Za-z0-9+/=_-])(?P<run>[A-Za-z0-9+/=_-]{16,})")
_NEAR_WORD = re2.compile(r"(?i:pass|pwd|secret|token|key|credential|auth|bearer)")
_NEAR_BEFORE, _NEAR_AFTER = 48, 24  # characters around a run where a key word makes it a candidate

# One expression for every kind: one scan of the text finds the first (leftmost) candidate.
_ALL = re2.compile("|".join(f"(?:{kind.pattern})" for kind in _KINDS.values()))
SECRET_PATTERNS: dict[str, Any] = {name: re2.compile(kind.pattern) for name, kind in _KINDS.items()}
SECRET_PATTERNS[HIGH_ENTROPY] = _HIGH_ENTROPY_RUN
SECRET_KINDS = tuple(SECRET_PATTERNS)
# Every marker in one literal alternation: text without any (most text) costs one scan.
_ANY_MARKER = re2.compile(
    "|".join(re2.escape(m) for m in sorted({m for k in _KINDS.values() for m in k.markers}, key=len, reverse=True))
)
_ANY_MARKER_CI = re2.compile("(?i:" + _ANY_MARKER.pattern + ")")

# Named group -> (kind, role): the group that matched says which kind and which part of it.
_GROUPS: dict[str, str] = {}
for _name, _kind in _KINDS.items():
    for _group in re2.compile(_kind.pattern).groupindex:
        if not _group.startswith("key__"):  # the key of a pair is kept, not replaced
            _GROUPS[_group] = _name

# The value groups of the combined expression, in order (a match sets exactly one).
_VALUE_GROUPS = sorted((index, name) for name, index in _ALL.groupindex.items() if name in _GROUPS)
_ASSIGNMENT_KEY = _ALL.groupindex["key__assignment"]

# Values that say "there is no secret here", not a secret.
_NOT_VALUES = frozenset(
    [
        *("none", "null", "nil", "undefined", "true", "false", "yes", "no", "on", "off", "required", "optional"),
        *("empty", "enabled", "disabled", "default", "unset", "hidden", "masked", "redacted", "[redacted]"),
        *("basic", "bearer", "token", "digest", "oauth", "oauth2", "jwt", "sso", "ldap", "saml", "api", "apikey"),
        *("password", "passwd", "secret", "string", "str", "int", "bool", "env", "file"),
        # code talk: "if not password: raise ...", "token: return ..."
        *("raise", "return", "await", "yield", "lambda", "not", "and", "or", "is", "in", "if", "else", "elif"),
        *("self", "cls", "this", "new"),
    ]
)
# Templates and references, not values: ${DB_PASSWORD}, $(cat file), %s, {{ secrets.X }},
# <your password>, [REDACTED], (none), os.environ[...]. A password may start with "!", "@" or "#".
_PLACEHOLDER_START = ("${", "$(", "%s", "%(", "{", "<", "[", "(", "os.", "self.", "process.env")
_ENV_REFERENCE = re2.compile(r"\$[A-Z_][A-Z0-9_]*")  # $DB_PASSWORD
_CODE_CHARS = frozenset("()[]{}")
_NOT_A_QUOTED_START = frozenset(")]},;: \t")
_KEY_WORDS_IN_VALUE = re2.compile(r"(?i:pass|pwd|secret|token|key|credential|auth)")
_DOTTED_NAME = re2.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+")
_NUMBER = re2.compile(r"[0-9][0-9.,_]*")
_PATH_KEYS = frozenset({"pwd", "oldpwd"})  # the shell's working directory, not a password
_TRAILING_PUNCTUATION = ".,!?:;)"


def _classes(text: str) -> int:
    """How many of lower, upper, digit, other this text uses (a leading capital does not count)."""
    body = text[1:] if text[:1].isupper() else text
    return (
        any(c.islower() for c in text)
        + any(c.isupper() for c in body)
        + any(c.isdigit() for c in text)
        + any(not c.isalnum() for c in text)
    )


def _looks_generated(value: str) -> bool:
    """A value that mixes character classes, or is long: what a generated credential looks like
    (a word, a number or a name is not)."""
    if _NUMBER.fullmatch(value):
        return False
    return (len(value) >= 6 and _classes(value) >= 2) or len(value) >= 12


def _is_placeholder(value: str) -> bool:
    lowered = value.lower()
    if lowered in _NOT_VALUES or lowered.startswith(_PLACEHOLDER_START) or value.startswith(REDACTED):
        return True
    if value[0] == "$" and _ENV_REFERENCE.fullmatch(value):
        return True
    return len(set(value)) == 1  # "xxxxxx", "******"


def _is_code(value: str) -> bool:
    """``token = tokenizer.encode(text)``, ``password=password``, ``api_key=settings.api_key``:
    code talk names a variable, it does not hold a credential."""
    return (
        not _CODE_CHARS.isdisjoint(value)
        or _DOTTED_NAME.fullmatch(value) is not None
        or (value.isidentifier() and _KEY_WORDS_IN_VALUE.search(value) is not None)
    )


def _assignment_ok(key: str, value: str, quoted: bool) -> bool:
    if len(value) < 3 or _is_placeholder(value):
        return False
    lowered_key = key.lower()
    if lowered_key in _PATH_KEYS and value.startswith(("/", "~")):
        return False
    if not quoted and _is_code(value):
        return False
    if quoted and value[0] in _NOT_A_QUOTED_START:
        # the quote closed a string and the next one opened later: input('Password: ') ... '
        return False
    strong = _STRONG_KEY.search(lowered_key) is not None
    if strong:
        return len(value) >= 4 and not (lowered_key.endswith("s") and _NUMBER.fullmatch(value))
    return _looks_generated(value)


def _phrase_ok(value: str, quoted: bool) -> bool:
    if _is_placeholder(value) or (not quoted and _is_code(value)):
        return False
    return len(value) >= 4 if quoted else _looks_generated(value)


def _basic_ok(value: str) -> bool:
    """A Basic credential is base64 of ``user:password``; "basic instructions" is not."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


_STRONG_KEY = re2.compile("(?i:" + _STRONG_WORDS + ")")


def _entropy(text: str) -> float:
    size = len(text)
    return -sum(n / size * math.log2(n / size) for n in Counter(text).values())


def _wordy(text: str) -> float:
    """The share of ``text`` in runs of three or more lower-case letters ("Config", "token"):
    about 0.1 for a random string of letters and digits, above 0.5 for a name made of words."""
    in_words = run = 0
    for c in text:
        if c.islower():
            run += 1
            continue
        if run >= 3:
            in_words += run
        run = 0
    if run >= 3:
        in_words += run
    return in_words / len(text)


def _high_entropy(run: str) -> bool:
    """A run that looks generated: letters and digits, varied, not made of words."""
    if len(run) < 16 or not any(c.isdigit() for c in run) or not any(c.isalpha() for c in run):
        return False
    return _entropy(run) >= 3.3 and _wordy(run) < 0.4


# A check per kind (those without one: every match is a secret). Gets the matched value, the
# match and the group name.
class _Spans(NamedTuple):
    data: bytes
    spans: tuple[tuple[int, int], ...]  # (start, end) of each group, (-1, -1) when it is unset


_Check = Callable[[str, _Spans, str], bool]
_UNANCHORED = re2._Anchor.UNANCHORED


def _found(regex: Any, data: bytes) -> bool:
    """Whether ``regex`` matches somewhere in ``data`` (the binding directly, like _matches)."""
    return bool(regex._regexp.Match(_UNANCHORED, data, 0, len(data))[0][0] >= 0)


def _matches(regex: Any, data: bytes) -> Any:
    """Each match of ``regex`` in ``data``, as the spans of its groups.

    This calls the RE2 binding under the module's ``finditer`` (google-re2 is pinned): its
    ``finditer`` builds a match object whose every ``span()`` looks the group count up again,
    which made a text of many near-misses ("basic basic ...") four times slower.
    """
    raw = regex._regexp
    pos, end = 0, len(data)
    while pos <= end:
        spans = raw.Match(_UNANCHORED, data, pos, end)
        start, stop = spans[0]
        if start < 0:
            return
        yield _Spans(data, spans)
        pos = stop if stop > start else stop + 1


def _check_assignment(value: str, match: _Spans, group: str) -> bool:
    start, end = match.spans[_ASSIGNMENT_KEY]
    return _assignment_ok(_decode(match.data[start:end]), value, not group.endswith("_bare"))


def _check_phrase(value: str, match: _Spans, group: str) -> bool:
    return _phrase_ok(value, not group.endswith("_bare"))


_CHECKS: dict[str, _Check] = {
    "credential_assignment": _check_assignment,
    "credential_phrase": _check_phrase,
    "basic_auth": lambda value, match, group: _basic_ok(value),
    "bearer": lambda value, match, group: _looks_generated(value),
    "url_password": lambda value, match, group: not _is_placeholder(value),
}


class Finding(NamedTuple):
    """Where a secret's value is in a text (UTF-8 byte offsets), and its kind."""

    start: int
    end: int
    kind: str


def _value_group(match: _Spans) -> tuple[str, int, int] | None:
    spans = match.spans
    for index, group in _VALUE_GROUPS:
        start, end = spans[index]
        if start >= 0:
            return group, start, end
    return None


_PUNCTUATION_BYTES = _TRAILING_PUNCTUATION.encode()


def _encode(text: str) -> bytes:
    # Scanned as UTF-8 bytes: RE2's str interface converts every match's offsets back to
    # characters, which cost three times the match itself. A lone surrogate (valid in a str, not
    # in UTF-8) is carried through as its three bytes.
    return text.encode("utf-8", "surrogatepass")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:  # a replacement cut through an invalid sequence
        return data.decode("utf-8", "replace")


def _findings(data: bytes, *, first: bool) -> list[Finding]:
    """Every secret's value in ``data`` (only the first with ``first``), in order."""
    if not _found(_ANY_MARKER_CI, data):
        return []
    found: list[Finding] = []
    for match in _matches(_ALL, data):
        located = _value_group(match)
        if located is None:
            continue
        group, start, end = located
        kind = _GROUPS[group]
        if kind == "credential_phrase" and group.endswith("_bare"):
            end = start + len(data[start:end].rstrip(_PUNCTUATION_BYTES))
        value = _decode(data[start:end])
        check = _CHECKS.get(kind)
        if not value or (check is not None and not check(value, match, group)):
            continue
        found.append(Finding(start, end, kind))
        if first:
            return found
    if _found(_NEAR_WORD, data):
        covered = [(f.start, f.end) for f in found]  # in order: walked once alongside the runs
        at = 0
        for run in _matches(_HIGH_ENTROPY_RUN, data):
            start, end = run.spans[1]
            while at < len(covered) and covered[at][1] <= start:
                at += 1
            if (at < len(covered) and covered[at][0] <= start) or not _high_entropy(_decode(data[start:end])):
                continue
            near = data[max(0, start - _NEAR_BEFORE) : start] + b" " + data[end : end + _NEAR_AFTER]
            if _found(_NEAR_WORD, near):
                found.append(Finding(start, end, HIGH_ENTROPY))
                if first:
                    return found
        found.sort()
    return found


_MIN_SENSITIVE_CHARS = 6  # the shortest email ("a@b.co"); secrets and phone numbers are longer


def find_secret(text: str) -> str | None:
    """The kind of the first credential-looking value in ``text``, or None."""
    if len(text) < _MIN_SENSITIVE_CHARS:
        return None
    found = _findings(_encode(text), first=True)
    return found[0].kind if found else None


def find_secrets(text: str) -> list[Finding]:
    """Every credential-looking value in ``text``: where it is (in its UTF-8 bytes) and its kind."""
    if len(text) < _MIN_SENSITIVE_CHARS:
        return []
    return _findings(_encode(text), first=False)


def redact_secrets(text: str) -> tuple[str, int]:
    """``text`` with every credential-looking value replaced by ``[REDACTED]`` (the key before it
    is kept: ``DB_PASSWORD=[REDACTED]``); and how many were replaced."""
    if len(text) < _MIN_SENSITIVE_CHARS:
        return text, 0
    data = _encode(text)
    found = _findings(data, first=False)
    if not found:
        return text, 0
    pieces: list[bytes] = []
    at = 0
    for start, end, _ in found:
        if start < at:  # overlaps the one before (already replaced)
            continue
        pieces.append(data[at:start])
        pieces.append(_REDACTED_BYTES)
        at = end
    pieces.append(data[at:])
    return _decode(b"".join(pieces)), len(found)


_REDACTED_BYTES = REDACTED.encode()


EMAIL = re2.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# North-American numbers with optional +1 and parentheses (the parenthesis is part of the match),
# and international "+CC ..." numbers. Not inside a word or after "+": the character before is
# consumed (RE2 has no look-behind) and put back; \b after the last digit.
PHONE = re2.compile(
    r"(?P<before>^|[^\w+])(?P<phone>(?:\+?1[\s.-]?)?(?:\(\d{3}\)|\d{3})[\s.-]?\d{3}[\s.-]?\d{4}\b"
    r"|\+\d{1,3}(?:[\s.-]?\d{1,4}){2,5}\b)"
)
_PHONE_MIN_DIGITS = 7  # an international number has at least this many digits (NA: 10)
_DROP_DIGITS = str.maketrans("", "", "0123456789")


def _phone(match: Any) -> str:
    return str(match.group("before")) + REDACTED


def redact_pii(text: str) -> tuple[str, int]:
    count = 0
    if "@" in text:
        text, count = EMAIL.subn(REDACTED, text)
    if len(text) - len(text.translate(_DROP_DIGITS)) >= _PHONE_MIN_DIGITS:
        text, phones = PHONE.subn(_phone, text)
        count += phones
    return text, count


# Dict keys whose values are always withheld, whatever they look like: these names, and any key
# that ends with a credential's name (DB_PASSWORD, x-api-key, aws_secret_access_key, bearer_token).
SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "auth",
        "api_key",
        "apikey",
        "api-key",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "cookie",
        "set-cookie",
        "private_key",
        "x-api-key",
    }
)
_SENSITIVE_KEY_END = re2.compile(
    r"(?i:password|passwd|passphrase|pwd|secret|token|api[_.-]?key|apikey|access[_.-]?key"
    r"|private[_.-]?key|credentials?|authorization|cookie)$"
)


def is_sensitive_key(key: str) -> bool:
    """Whether a field named ``key`` holds a credential (its value is withheld whole)."""
    return key.lower() in SENSITIVE_KEYS or _SENSITIVE_KEY_END.search(key) is not None


TRUNCATED_SUFFIX = "...[truncated]"


# Receipts repeat the same short strings (routes, providers, models, principals): remember the
# verdict for those. Bounded: cleared when full.
_MEMOS: dict[bool, dict[str, tuple[str, int]]] = {True: {}, False: {}}  # by the pii flag
_MEMO_MAX_ENTRIES = 4096
_MEMO_MAX_CHARS = 80
# Dict keys repeat even more (receipt payloads use a few dozen): whether each is a sensitive one.
_KEY_VERDICTS: dict[Any, bool] = {}
_SCALARS = frozenset({int, float, bool, type(None)})


def _redact_text(text: str, *, pii: bool) -> tuple[str, int]:
    text, count = redact_secrets(text)
    if pii:
        text, more = redact_pii(text)
        count += more
    return text, count


# Our own ids (32 lowercase hex digits, UUIDs): these fixed shapes are no credential prefix, email
# or phone number, and have no key word beside them, so they skip every scan. Checked with string
# methods: a request id is new on every request (no memo), and a regex call costs more.
_HEX = "0123456789abcdef"


def _is_id_shape(text: str) -> bool:
    if len(text) == 32:
        return not text.strip(_HEX)
    return (
        len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-" and not text.replace("-", "").strip(_HEX)
    )


def redact_text(text: str, *, pii: bool) -> tuple[str, int]:
    """``text`` with credentials (and, with ``pii``, emails and phone numbers) replaced."""
    if len(text) < _MIN_SENSITIVE_CHARS or (len(text) in (32, 36) and _is_id_shape(text)):
        return text, 0
    if len(text) <= _MEMO_MAX_CHARS:
        memo = _MEMOS[pii]
        known = memo.get(text)
        if known is None:
            known = _redact_text(text, pii=pii)
            if len(memo) >= _MEMO_MAX_ENTRIES:
                memo.clear()
            memo[text] = known
        return known
    return _redact_text(text, pii=pii)


def cap_text(text: str, max_chars: int) -> tuple[str, bool]:
    """``text`` shortened to at most ``max_chars`` (suffix included); ``max_chars <= 0``: no cap.

    A cap no longer than the suffix keeps a plain prefix instead: the suffix alone would be
    longer than the cap, or would replace all of the text.
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return text, False
    if max_chars <= len(TRUNCATED_SUFFIX):
        return text[:max_chars], True
    return text[: max_chars - len(TRUNCATED_SUFFIX)] + TRUNCATED_SUFFIX, True


def scrub_text(text: str, *, pii: bool, max_chars: int = 0) -> str:
    """``text`` redacted, then capped: what any place that keeps or forwards caller text stores."""
    return cap_text(redact_text(text, pii=pii)[0], max_chars)[0]


def _key_is_sensitive(key: Any) -> bool:
    sensitive = _KEY_VERDICTS.get(key)
    if sensitive is None:
        sensitive = type(key) is str and is_sensitive_key(key)
        if len(_KEY_VERDICTS) < _MEMO_MAX_ENTRIES:
            _KEY_VERDICTS[key] = sensitive
    return sensitive


def redact(value: Any, *, pii: bool, max_chars: int = 0) -> tuple[Any, int]:
    """A copy of ``value`` (JSON-like) with sensitive keys withheld, credentials (and, with ``pii``,
    emails and phone numbers) replaced by ``[REDACTED]``, and strings capped at ``max_chars``.

    Returns the copy and how many replacements were made.
    """
    if isinstance(value, str):
        text, count = redact_text(value, pii=pii)
        text, cut = cap_text(text, max_chars)
        return text, count + int(cut)
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        total = 0
        for key, item in value.items():
            name = str(key)
            if _key_is_sensitive(name) and item not in (None, "", [], {}) and type(item) is not bool:
                result[name] = REDACTED
                total += 1
                continue
            result[name], count = redact(item, pii=pii, max_chars=max_chars)
            total += count
        return result, total
    if isinstance(value, list | tuple):
        items = []
        total = 0
        for item in value:
            cleaned, count = redact(item, pii=pii, max_chars=max_chars)
            items.append(cleaned)
            total += count
        return items, total
    return value, 0


def _scrub_text(text: str, pii: bool, max_chars: int) -> str:
    """``text`` redacted and capped; the very same object when nothing changes."""
    redacted, count = redact_text(text, pii=pii)
    if max_chars > 0 and len(redacted) > max_chars:
        return cap_text(redacted, max_chars)[0]
    return text if count == 0 else redacted


def scrub(value: Any, *, pii: bool, max_chars: int = 0) -> Any:
    """:func:`redact` without the count, and without copying what needs no change.

    The receipts writer calls this for every step: most payloads are clean, and walking them
    without building copies (strings inline, verdicts memoised per key and per short string)
    costs about a microsecond for a receipt's payload of ten fields.
    """
    # redact_text's memo of short strings tells which are clean (no replacement) without a call;
    # it serves only when the cap cannot cut them.
    memo = _MEMOS[pii] if max_chars <= 0 or max_chars >= _MEMO_MAX_CHARS else _NO_MEMO
    return _scrub(value, pii, max_chars, memo)


_NO_MEMO: dict[str, tuple[str, int]] = {}
_DIRTY = ("", 1)  # what an unknown string looks like to the memo check below


def _scrub(value: Any, pii: bool, max_chars: int, memo: dict[str, tuple[str, int]]) -> Any:
    kind = type(value)
    if kind is str:
        if len(value) < _MIN_SENSITIVE_CHARS or not memo.get(value, _DIRTY)[1]:
            return value
        return _scrub_text(value, pii, max_chars)
    if kind is dict:
        changed: dict[str, Any] | None = None
        for key, item in value.items():
            sensitive = _KEY_VERDICTS.get(key)
            if sensitive is None:
                sensitive = _key_is_sensitive(key)
            item_kind = type(item)
            if sensitive:
                if item in (None, "", [], {}) or item_kind is bool:
                    continue
                cleaned: Any = REDACTED
            elif item_kind is str:
                # The common case inline: short, or a string already known to be clean.
                if len(item) < _MIN_SENSITIVE_CHARS or not memo.get(item, _DIRTY)[1]:
                    continue
                cleaned = _scrub_text(item, pii, max_chars)
            elif item_kind in _SCALARS:
                continue
            else:
                cleaned = _scrub(item, pii, max_chars, memo)
            if cleaned is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = cleaned
        return value if changed is None else changed
    if kind in (list, tuple):
        items = [_scrub(item, pii, max_chars, memo) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value
