"""Bearer authentication: who is calling.

Tokens are compared in constant time (SHA-256 digests through ``hmac.compare_digest``, checking
every configured token, so neither the length nor the position of a match leaks). A caller becomes
a :class:`Principal` once, in the request dependency; rate-limit keys, memory scopes and receipts
use that principal, never a raw header.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

ANONYMOUS_ID = "anonymous"
OWNER_ID = "owner"  # the principal of ORCH_BEARER_TOKEN

ROLE_CALLER = "caller"
ROLE_APPROVER = "approver"
APPROVER_ID = "approver"  # the principal of ORCH_APPROVER_TOKEN: approves tool calls, nothing else


@dataclass(frozen=True, slots=True)
class Principal:
    """An identified caller. ``id`` is a stable, non-secret name used in scopes and receipts."""

    id: str
    authenticated: bool
    roles: frozenset[str] = field(default_factory=frozenset)

    def has_role(self, role: str) -> bool:
        return role in self.roles


ANONYMOUS = Principal(ANONYMOUS_ID, authenticated=False, roles=frozenset({ROLE_CALLER}))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Authenticator:
    """Maps a presented bearer token to a principal."""

    def __init__(self, tokens: dict[str, Principal], *, required: bool) -> None:
        self.required = required
        self._entries = [(_digest(token), principal) for token, principal in tokens.items()]

    def identify(self, authorization: str | None) -> Principal | None:
        """The principal whose token is presented, or None (no header, bad scheme, unknown token)."""
        if not authorization:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        candidate = _digest(presented.strip())
        found: Principal | None = None
        for digest, principal in self._entries:
            # No early exit: the time taken does not depend on which token (if any) matched.
            if hmac.compare_digest(candidate, digest):
                found = principal
        return found

    @property
    def configured(self) -> bool:
        return bool(self._entries)


def resolve_dev_token(path: Path, *, replace_empty: bool = True) -> str:
    """A development bearer token, generated once and kept in ``path`` (mode 0600).

    Several workers or restarts then agree on the same token. Only used when auth is on and no
    ORCH_BEARER_TOKEN is set outside production (production refuses to start instead).
    """
    try:
        existing = path.read_text(encoding="utf-8").strip()
        if existing:
            return existing
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "orch-dev-" + secrets.token_urlsafe(24)
    try:
        # O_EXCL: the first writer wins; 0600 from the start, so the token is never world-readable.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another worker is writing it right now
            existing = path.read_text(encoding="utf-8").strip()
            if existing:
                return existing
            time.sleep(0.01)
        if not replace_empty:
            raise
        # Still empty after half a second: left by a writer that died between creating and
        # writing it (a crash, a full disk). Without this, every later start would fail on it.
        path.unlink(missing_ok=True)
        return resolve_dev_token(path, replace_empty=False)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token
