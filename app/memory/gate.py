"""The memory gate's decision, without I/O: may this message become a memory, and as what text?

The algorithm of the original (``upstream-behaviour.md`` section 3) with its bugs fixed: every
deny carries its true reason (the original reported most of them as ``deny:policy_write_disabled``),
a dedupe is reported as ``allow:dedupe_update``, the minimum length applies to every policy, and
secrets are checked on the raw text before anything else is done with it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from app.scrub import find_secret, redact_pii, redact_secrets

WritePolicy = Literal["off", "strict", "capture_only"]

# The taxonomy: the only reasons a decision can carry (responses and receipts alike).
ALLOW_EXPLICIT_INTENT = "allow:explicit_intent"
ALLOW_DEDUPE_UPDATE = "allow:dedupe_update"
ALLOW_CAPTURE_ONLY = "allow:capture_only"
DENY_FEATURE_DISABLED = "deny:feature_disabled"
DENY_POLICY_WRITE_DISABLED = "deny:policy_write_disabled"
DENY_NO_EXPLICIT_INTENT = "deny:no_explicit_intent"
DENY_SCRUBBED_TOO_SHORT = "deny:scrubbed_too_short"
DENY_SENSITIVE_CONTENT = "deny:sensitive_content"
DENY_ERROR = "deny:error"
REASONS = frozenset(
    {
        ALLOW_EXPLICIT_INTENT,
        ALLOW_DEDUPE_UPDATE,
        ALLOW_CAPTURE_ONLY,
        DENY_FEATURE_DISABLED,
        DENY_POLICY_WRITE_DISABLED,
        DENY_NO_EXPLICIT_INTENT,
        DENY_SCRUBBED_TOO_SHORT,
        DENY_SENSITIVE_CONTENT,
        DENY_ERROR,
    }
)

INTENT_PHRASES = (
    "remember this",
    "remember that",
    "don't forget",
    "save this",
    "store this",
    "keep in mind",
    "make a note",
)
_INTENT = re.compile("|".join(re.escape(phrase) for phrase in INTENT_PHRASES))  # leftmost match wins
# "remember ..." right after one of these words is the speaker talking about their own memory
# ("I remember that", "we can't remember this"), not asking the assistant to keep something.
_NOT_A_REQUEST = frozenset({"i", "we", "they", "he", "she", "not", "never", "cannot", "dont", "cant"})
_WORD_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz'")
# Before the phrase, only words like these make a lead-in ("Please remember that ...", "Hey, could
# you keep in mind: ..."), removed with the phrase; any other word before it is content, and then
# the text is kept whole ("The bins go out on Tuesday, keep in mind.").
MAX_LEAD_IN_CHARS = 40
_LEAD_IN_WORDS = frozenset(
    [
        "please",
        "pls",
        "plz",
        "kindly",
        "hey",
        "hi",
        "hello",
        "ok",
        "okay",
        "so",
        "and",
        "also",
        "oh",
        "btw",
        "now",
        "just",
        "can",
        "could",
        "would",
        "will",
        "you",
        "u",
        "i",
        "want",
        "need",
        "to",
        "for",
        "me",
        "us",
    ]
)
_WORDS = re.compile(r"[^\W\d_]+|\d+")
_LEAD_IN_TAIL = re.compile(r"^(?:\s+(?:of|about))?\s*[:\-\u2013\u2014,.]*\s*", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"\s+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


@dataclass(frozen=True, slots=True)
class GateConfig:
    """The switches and limits the decision depends on (from the ORCH_MEMORY_* settings)."""

    enabled: bool
    capture_enabled: bool
    write_policy: WritePolicy
    max_chars: int
    min_chars: int
    redact_pii: bool

    @property
    def active(self) -> bool:
        return self.enabled and self.capture_enabled and self.write_policy != "off"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate's answer before storage: a deny with its reason, or the text to store."""

    reason: str
    explicit_intent: bool
    scrub_applied: bool = False
    content: str | None = None  # the scrubbed text to store (allow verdicts only)
    redactions: int = 0

    @property
    def allowed(self) -> bool:
        return self.content is not None


def normalise(text: str) -> str:
    """Control characters become spaces, runs of whitespace one space, the ends are trimmed."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def find_intent(text: str) -> tuple[int, int] | None:
    """Where the first explicit-intent phrase is (start, end), case-insensitively, or None."""
    lowered = text.lower().translate(_APOSTROPHES)
    for found in _INTENT.finditer(lowered):
        if found.group().startswith("remember"):
            before = _word_before(lowered, found.start())
            if before in _NOT_A_REQUEST or before.endswith("n't"):
                continue  # "I remember that ...", "I can't remember this ...": talk, not a request
        return found.span()
    return None


def _word_before(text: str, end: int) -> str:
    """The word (``[a-z']+``) that ends ``text[:end]`` but for non-word characters, or "".

    A walk back from ``end``, not a regex searched from the start: ``([a-z']+)\\W*$`` over the
    text before each phrase took time quadratic in its length (1.7 s for 8000 letters and a digit).
    """
    start = end
    while start > 0 and not (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1  # the non-word characters (the regex's \W*) between the word and the phrase
    if start == 0 or text[start - 1] not in _WORD_LETTERS:
        return ""  # a digit or another script's letter right before: no word of ours
    stop = start
    while start > 0 and text[start - 1] in _WORD_LETTERS:
        start -= 1
    while stop < end and text[stop] == "'":
        stop += 1  # "dont'" keeps its trailing apostrophes, as the greedy [a-z']+ did
    return text[start:stop]


def strip_lead_in(text: str) -> str:
    """Remove a leading intent phrase (and a short lead-in before it) with its ``:``/``-`` tail."""
    found = find_intent(text)
    if found is None or found[0] > MAX_LEAD_IN_CHARS:
        return text
    if any(word not in _LEAD_IN_WORDS for word in _WORDS.findall(text[: found[0]].lower())):
        return text
    rest = text[found[1] :]
    return rest[_LEAD_IN_TAIL.match(rest).end() :]  # type: ignore[union-attr]  # the pattern always matches


def content_hash(content: str) -> str:
    """Identifies equal contents for dedupe (case and spacing do not make a memory new)."""
    return hashlib.sha256(content.lower().encode("utf-8")).hexdigest()[:32]


def candidate_id_hash(candidate_id: str) -> str:
    return hashlib.sha256(candidate_id.encode("utf-8")).hexdigest()[:12]


def decide(text: str, config: GateConfig, *, explicit: bool = False) -> Verdict:
    """Decide what becomes of ``text``. ``explicit``: the caller asked to store it (POST /v1/memory),
    which is the explicit intent itself, so no phrase is needed under ``strict``."""
    if not (config.enabled and config.capture_enabled):
        return Verdict(DENY_FEATURE_DISABLED, explicit_intent=False)
    if config.write_policy == "off":
        return Verdict(DENY_POLICY_WRITE_DISABLED, explicit_intent=False)
    intent = explicit or find_intent(text) is not None
    # A message carrying a credential is refused whole: no "cleaned" part of it is kept either.
    # Checked before the intent, so that such a message is always reported (and counted) as what
    # it is, whatever else it lacks.
    if find_secret(text) is not None:
        return Verdict(DENY_SENSITIVE_CONTENT, explicit_intent=intent)
    if config.write_policy == "strict" and not intent:
        return Verdict(DENY_NO_EXPLICIT_INTENT, explicit_intent=False)
    cleaned = normalise(text)
    if intent:
        cleaned = normalise(strip_lead_in(cleaned))
    if len(cleaned) > config.max_chars:
        cleaned = cleaned[: config.max_chars].rstrip()
    cleaned, redactions = redact_secrets(cleaned)
    if config.redact_pii:
        cleaned, more = redact_pii(cleaned)
        redactions += more
    if len(cleaned.strip()) < config.min_chars:
        return Verdict(DENY_SCRUBBED_TOO_SHORT, explicit_intent=intent, scrub_applied=True)
    if find_secret(cleaned) is not None:  # cutting could in theory form one; never store it
        return Verdict(DENY_SENSITIVE_CONTENT, explicit_intent=intent, scrub_applied=True)
    reason = ALLOW_EXPLICIT_INTENT if config.write_policy == "strict" or explicit else ALLOW_CAPTURE_ONLY
    return Verdict(reason, explicit_intent=intent, scrub_applied=True, content=cleaned, redactions=redactions)
