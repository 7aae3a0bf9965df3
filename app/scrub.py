"""Secret and personal-data scrubbing: one set of patterns for receipts, memory, tool output and logs.

(The original had three different lists; a secret caught in one place leaked through another.)
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[REDACTED]"

# Credential-looking values, by kind. Case-insensitive where the real format allows it.
SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "private_key": re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----)?", re.DOTALL
    ),
    "bearer": re.compile(r"\bbearer\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE),
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "openai_key": re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),
    "stripe_key": re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"),
    "github_token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{22,})"),
    "slack_token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "aws_access_key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "google_api_key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),
    "credential_assignment": re.compile(
        r"\b(?:api[_-]?key|secret(?:[_-]?key)?|password|passwd|access[_-]?token|auth[_-]?token|client[_-]?secret)"
        r"\s*[:=]\s*['\"]?[^\s'\",;]{6,}",
        re.IGNORECASE,
    ),
}

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# North-American numbers with optional +1 and parentheses (the parenthesis is part of the match,
# unlike the original, which left "(" behind), and international "+CC ..." numbers.
PHONE = re.compile(
    r"(?<![\w+])(?:\+?1[\s.-]?)?(?:\(\d{3}\)|\d{3})[\s.-]?\d{3}[\s.-]?\d{4}(?!\w)"
    r"|(?<![\w+])\+\d{1,3}(?:[\s.-]?\d{1,4}){2,5}(?!\w)"
)

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


def _scoped(pattern: re.Pattern[str]) -> str:
    flags = ("i" if pattern.flags & re.IGNORECASE else "") + ("s" if pattern.flags & re.DOTALL else "")
    return f"(?{flags}:{pattern.pattern})" if flags else f"(?:{pattern.pattern})"


# One scan answers "is there anything to redact at all?": most strings (ids, model names, routes)
# have nothing, and then they cost one regex search instead of one per pattern.
_ANY_SECRET = re.compile("|".join(_scoped(p) for p in SECRET_PATTERNS.values()))
_ANY_PII = re.compile(f"{_scoped(EMAIL)}|{_scoped(PHONE)}")
_MIN_SECRET_CHARS = 8  # no pattern above matches fewer characters


def find_secret(text: str) -> str | None:
    """The kind of the first credential-looking value in ``text``, or None."""
    if len(text) < _MIN_SECRET_CHARS or not _ANY_SECRET.search(text):
        return None
    for kind, pattern in SECRET_PATTERNS.items():
        if pattern.search(text):
            return kind
    return None  # pragma: no cover - the combined pattern matched, so one of its parts does


def redact_secrets(text: str) -> tuple[str, int]:
    if len(text) < _MIN_SECRET_CHARS or not _ANY_SECRET.search(text):
        return text, 0
    count = 0
    for pattern in SECRET_PATTERNS.values():
        text, n = pattern.subn(REDACTED, text)
        count += n
    return text, count


def redact_pii(text: str) -> tuple[str, int]:
    if not _ANY_PII.search(text):
        return text, 0
    text, emails = EMAIL.subn(REDACTED, text)
    text, phones = PHONE.subn(REDACTED, text)
    return text, emails + phones


_ANY_SENSITIVE = re.compile(f"{_ANY_SECRET.pattern}|{_ANY_PII.pattern}")
_MIN_SENSITIVE_CHARS = 6  # the shortest email ("a@b.co"); secrets and phone numbers are longer


def redact_text(text: str, *, pii: bool) -> tuple[str, int]:
    # The common case, a clean short string, costs one length check or one regex search.
    if len(text) < _MIN_SENSITIVE_CHARS or not (_ANY_SENSITIVE if pii else _ANY_SECRET).search(text):
        return text, 0
    text, count = redact_secrets(text)
    if pii:
        text, more = redact_pii(text)
        count += more
    return text, count


def cap_text(text: str, max_chars: int) -> tuple[str, bool]:
    """``text`` shortened to at most ``max_chars`` (suffix included); ``max_chars <= 0``: no cap."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text, False
    keep = max(0, max_chars - len(TRUNCATED_SUFFIX))
    return text[:keep] + TRUNCATED_SUFFIX, True


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
