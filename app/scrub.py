"""Secret and personal-data scrubbing: one set of patterns for receipts, memory, tool output and logs.

(The original had three different lists; a secret caught in one place leaked through another.)

Every pattern has literal markers (text it cannot match without): a string is only searched with
the patterns whose markers it contains, so a clean string costs a few substring tests instead of a
dozen regex scans. This runs for every receipt step.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

REDACTED = "[REDACTED]"


class _Pattern(NamedTuple):
    regex: re.Pattern[str]
    markers: tuple[str, ...]  # lowercase substrings; a match is impossible without one of them


# Where a key may start: not inside a run of letters or digits (so "task-..." is not "sk-..."),
# but right after an underscore, which \b would not allow ("DEPLOY_ghp_...", "my_sk-...").
_START = r"(?<![A-Za-z0-9])"

# Credential-looking values, by kind. Case-insensitive where the real format allows it.
_SECRETS: dict[str, _Pattern] = {
    "private_key": _Pattern(
        re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----)?", re.DOTALL),
        ("private key",),
    ),
    "bearer": _Pattern(re.compile(r"\bbearer\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE), ("bearer",)),
    "jwt": _Pattern(re.compile(_START + r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"), ("eyj",)),
    "openai_key": _Pattern(re.compile(_START + r"sk-[A-Za-z0-9_-]{20,}"), ("sk-",)),
    "stripe_key": _Pattern(re.compile(_START + r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"), ("_live_", "_test_")),
    "github_token": _Pattern(
        re.compile(_START + r"(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{22,})"),
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    "slack_token": _Pattern(re.compile(_START + r"xox[abposr]-[A-Za-z0-9-]{10,}"), ("xox",)),
    "aws_access_key": _Pattern(re.compile(_START + r"(?:AKIA|ASIA)[0-9A-Z]{16}\b"), ("akia", "asia")),
    "google_api_key": _Pattern(re.compile(_START + r"AIza[0-9A-Za-z_-]{35}"), ("aiza",)),
    "credential_assignment": _Pattern(
        re.compile(
            # "token" needs no word boundary: token=, access_token=, my-api-token= all match (the
            # value is what is replaced); "tokens" and "max_tokens" do not.
            r"(?:\b(?:api[_-]?key|secret(?:[_-]?key)?|password|passwd|client[_-]?secret)|token)"
            r"\s*[:=]\s*['\"]?[^\s'\",;]{6,}",
            re.IGNORECASE,
        ),
        ("key", "secret", "passw", "token"),
    ),
}
SECRET_PATTERNS: dict[str, re.Pattern[str]] = {kind: p.regex for kind, p in _SECRETS.items()}

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# North-American numbers with optional +1 and parentheses (the parenthesis is part of the match,
# unlike the original, which left "(" behind), and international "+CC ..." numbers.
PHONE = re.compile(
    r"(?<![\w+])(?:\+?1[\s.-]?)?(?:\(\d{3}\)|\d{3})[\s.-]?\d{3}[\s.-]?\d{4}(?!\w)"
    r"|(?<![\w+])\+\d{1,3}(?:[\s.-]?\d{1,4}){2,5}(?!\w)"
)
_PHONE_MIN_DIGITS = 7  # an international number has at least this many digits (NA: 10)
_DROP_DIGITS = str.maketrans("", "", "0123456789")

# Dict keys whose values are always withheld, whatever they look like.
SENSITIVE_KEYS = frozenset(
    {
        "authorization",
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

TRUNCATED_SUFFIX = "...[truncated]"
_MIN_SENSITIVE_CHARS = 6  # the shortest email ("a@b.co"); secrets and phone numbers are longer


# Every marker in one alternation: a clean string (the common case) costs one scan, not one
# substring test per marker.
_ANY_MARKER = re.compile("|".join(re.escape(m) for p in _SECRETS.values() for m in p.markers))


def _candidates(text: str) -> list[tuple[str, re.Pattern[str]]]:
    lowered = text.lower()
    if _ANY_MARKER.search(lowered) is None:
        return []
    return [(kind, p.regex) for kind, p in _SECRETS.items() if any(m in lowered for m in p.markers)]


def find_secret(text: str) -> str | None:
    """The kind of the first credential-looking value in ``text``, or None."""
    if len(text) < _MIN_SENSITIVE_CHARS:
        return None
    for kind, regex in _candidates(text):
        if regex.search(text):
            return kind
    return None


def redact_secrets(text: str) -> tuple[str, int]:
    count = 0
    if len(text) >= _MIN_SENSITIVE_CHARS:
        for _, regex in _candidates(text):
            text, n = regex.subn(REDACTED, text)
            count += n
    return text, count


def redact_pii(text: str) -> tuple[str, int]:
    count = 0
    if "@" in text:
        text, count = EMAIL.subn(REDACTED, text)
    if len(text) - len(text.translate(_DROP_DIGITS)) >= _PHONE_MIN_DIGITS:
        text, phones = PHONE.subn(REDACTED, text)
        count += phones
    return text, count


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


# Our own ids (32 lowercase hex digits, UUIDs): lowercase hex cannot spell any credential prefix
# or an email, and these fixed shapes are not phone numbers, so they skip every scan.
_ID_SHAPE = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def redact_text(text: str, *, pii: bool) -> tuple[str, int]:
    """``text`` with credentials (and, with ``pii``, emails and phone numbers) replaced."""
    if len(text) < _MIN_SENSITIVE_CHARS or (len(text) in (32, 36) and _ID_SHAPE.fullmatch(text)):
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
            if name.lower() in SENSITIVE_KEYS and item not in (None, "", [], {}):
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
                sensitive = type(key) is str and key.lower() in SENSITIVE_KEYS
                if len(_KEY_VERDICTS) < _MEMO_MAX_ENTRIES:
                    _KEY_VERDICTS[key] = sensitive
            item_kind = type(item)
            if sensitive:
                if item in (None, "", [], {}):
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
