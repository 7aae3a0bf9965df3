"""Regular expressions written by operators (router and tool policies) and matched against caller
text. They run on Google's RE2, whose matching time is linear in the text whatever the pattern:
Python's ``re`` backtracks, so one pattern with overlapping quantifiers (``\\s*\\)*\\s*``) let a
single crafted message hold the event loop for minutes.

The dialect is RE2's (https://github.com/google/re2/wiki/Syntax) with two of Python's spellings
kept, because the policy docs have always used them: ``\\Z`` (end of text; RE2 spells it ``\\z``)
and ``\\uXXXX`` / ``\\UXXXXXXXX`` (RE2: ``\\x{XXXX}``). What RE2 cannot do in linear time is refused
when the pattern is compiled, with the reason: backreferences, lookahead and lookbehind, atomic
groups and possessive quantifiers, conditionals. Python's ``{,n}``, which RE2 would silently read
as literal text, is refused too.

The service's own regexes over caller text (word splitting, control characters, the memory
gate's phrases) stay on Python's ``re`` for its Unicode classes: each is written so that no text
can be matched two ways, and tests/unit/test_linear_regex.py drives each with the shapes that
would make one backtrack.

Matching goes through RE2's extension module directly on UTF-8 bytes: the text of a request is
encoded once (:func:`utf8`) for all patterns, which keeps a 200-rule policy at about a microsecond
per pattern (the ``re2`` wrapper's own ``search`` costs two to ten).
"""

from __future__ import annotations

import re2
from re2 import _re2

_ANCHOR_NONE = _re2.RE2.Anchor.UNANCHORED
_ANCHOR_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH
_NO_SPAN = (-1, -1)
_HEX = frozenset("0123456789abcdefABCDEF")
# Matching costs the text's length times about the compiled program's size (the DFA falls back to
# the NFA on patterns whose states explode, e.g. ``(.*a){180}``: ~60 ms on 8000 characters at this
# size). The shipped router policy's largest pattern compiles to 131 instructions.
MAX_PROGRAM_SIZE = 2000

# RE2's parse errors for what it refuses by design, as the reason an operator can act on.
_REASONS = (
    ("invalid escape sequence: \\1", "backreferences (\\1 ... \\9) are not supported"),
    ("invalid perl operator: (?P", "backreferences ((?P=name)) are not supported"),
    ("invalid perl operator: (?=", "lookahead assertions ((?=...), (?!...)) are not supported"),
    ("invalid perl operator: (?!", "lookahead assertions ((?=...), (?!...)) are not supported"),
    ("invalid perl operator: (?<=", "lookbehind assertions ((?<=...), (?<!...)) are not supported"),
    ("invalid perl operator: (?<!", "lookbehind assertions ((?<=...), (?<!...)) are not supported"),
    ("invalid perl operator: (?>", "atomic groups ((?>...)) are not supported"),
    ("invalid perl operator: (?(", "conditional groups ((?(1)...|...)) are not supported"),
    ("invalid perl operator: (?#", "comments ((?#...)) are not supported"),
    ("invalid perl operator: (?x", "verbose mode ((?x)) is not supported"),
    ("bad repetition operator: ++", "possessive quantifiers (++, *+, ?+) are not supported"),
    ("bad repetition operator: *+", "possessive quantifiers (++, *+, ?+) are not supported"),
    ("bad repetition operator: ?+", "possessive quantifiers (++, *+, ?+) are not supported"),
)


class PatternRefused(ValueError):
    """The pattern does not compile under RE2; the message is the reason (one line)."""


def utf8(text: str) -> bytes:
    """What the patterns match: the text as UTF-8 (a lone surrogate kept as its own bytes, which
    RE2 reads as one character, so no input makes matching fail)."""
    return text.encode("utf-8", "surrogatepass")


class LinearPattern:
    """A compiled pattern: :meth:`search`, :meth:`fullmatch` and :meth:`groups` take the text as
    ``str`` or as its :func:`utf8` bytes (encode once when several patterns look at one text)."""

    __slots__ = ("_names", "_re", "groupindex", "pattern")

    def __init__(self, pattern: str, *, case_insensitive: bool = False) -> None:
        options = re2.Options()
        options.case_sensitive = not case_insensitive
        options.log_errors = False  # refusals are reported by the caller, not printed to stderr
        compiled = _re2.RE2(_translate(pattern).encode("utf-8"), options)
        if not compiled.ok():
            raise PatternRefused(_reason(compiled.error().decode("utf-8", "replace")))
        if compiled.ProgramSize() > MAX_PROGRAM_SIZE:
            raise PatternRefused(
                f"the pattern compiles to {compiled.ProgramSize()} instructions, more than {MAX_PROGRAM_SIZE}"
                " (a counted repetition such as {1000} copies what it repeats)"
            )
        self.pattern = pattern
        self._re = compiled
        self.groupindex: dict[str, int] = {
            name.decode("utf-8"): index for name, index in compiled.NamedCapturingGroups()
        }
        self._names = tuple(self.groupindex.items())

    def search(self, text: str | bytes) -> bool:
        """Is the pattern found anywhere in the text?"""
        data = utf8(text) if isinstance(text, str) else text
        return self._re.Match(_ANCHOR_NONE, data, 0, len(data))[0] != _NO_SPAN

    def fullmatch(self, text: str | bytes) -> bool:
        """Does the pattern match the whole text?"""
        data = utf8(text) if isinstance(text, str) else text
        return self._re.Match(_ANCHOR_BOTH, data, 0, len(data))[0] != _NO_SPAN

    def groups(self, text: str | bytes) -> dict[str, str] | None:
        """The named groups of the leftmost match that took part in it, or None when not found."""
        data = utf8(text) if isinstance(text, str) else text
        spans = self._re.Match(_ANCHOR_NONE, data, 0, len(data))
        if spans[0] == _NO_SPAN:
            return None
        found: dict[str, str] = {}
        for name, index in self._names:
            start, end = spans[index]
            if start >= 0:
                found[name] = data[start:end].decode("utf-8", "surrogatepass")
        return found

    def __repr__(self) -> str:
        return f"LinearPattern({self.pattern!r})"


def _reason(error: str) -> str:
    for prefix, reason in _REASONS:
        if error.startswith(prefix):
            return f"{reason} (RE2 syntax, matched in linear time)"
    if error.startswith("invalid escape sequence: \\") and error[-1:].isdigit():
        return "backreferences (\\1 ... \\9) are not supported (RE2 syntax, matched in linear time)"
    return f"{error} (RE2 syntax)"


def _translate(pattern: str) -> str:
    """Python's spellings RE2 lacks, rewritten (``\\Z``, ``\\uXXXX``); ``{,n}`` refused."""
    if "\\" not in pattern and "{," not in pattern:
        return pattern  # the common case: nothing to look at
    out: list[str] = []
    i, size, in_class = 0, len(pattern), False
    while i < size:
        char = pattern[i]
        if char == "\\" and i + 1 < size:
            piece, i = _escape(pattern, i, in_class=in_class)
            out.append(piece)
            continue
        if in_class:
            if pattern.startswith("[:", i):  # [[:alpha:]]: its ']' does not close the class
                end = pattern.find(":]", i + 2)
                if end >= 0:
                    out.append(pattern[i : end + 2])
                    i = end + 2
                    continue
            in_class = char != "]"
            out.append(char)
            i += 1
            continue
        if char == "[":
            in_class = True
            start = i + 1
            if pattern.startswith("^", start):
                start += 1
            if pattern.startswith("]", start):  # a ']' first in a class is a literal
                start += 1
            out.append(pattern[i:start])
            i = start
            continue
        if char == "{" and pattern.startswith("{,", i):
            end = pattern.find("}", i)
            if end > i + 2 and pattern[i + 2 : end].isdigit():
                bound = pattern[i + 2 : end]
                raise PatternRefused(f"write {{0,{bound}}} for {{,{bound}}}: RE2 would read it as literal text")
        out.append(char)
        i += 1
    return "".join(out)


def _escape(pattern: str, i: int, *, in_class: bool) -> tuple[str, int]:
    """The escape at ``pattern[i]`` (a backslash) as RE2 spells it, and where the next token starts."""
    escaped = pattern[i + 1]
    if escaped == "Q":  # \Q...\E is literal text, escapes and all
        end = pattern.find("\\E", i + 2)
        stop = len(pattern) if end < 0 else end + 2
        return pattern[i:stop], stop
    if escaped == "Z" and not in_class:
        return "\\z", i + 2
    digits = 4 if escaped == "u" else 8 if escaped == "U" else 0
    code = pattern[i + 2 : i + 2 + digits]
    if digits and len(code) == digits and all(c in _HEX for c in code):
        return "\\x{" + code + "}", i + 2 + digits
    return pattern[i : i + 2], i + 2
