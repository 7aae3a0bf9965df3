"""Signed checkpoints of the receipt log, in the formats transparency logs share: a C2SP
tlog-checkpoint body (origin, tree size, base64 root hash) signed as a C2SP signed note with
Ed25519, so that Go's ``sumdb/note``, the transparency-dev witnesses and any other signed-note
verifier can check them.

* key id: the first 4 bytes of ``SHA-256(name || 0x0A || 0x01 || public key)``;
* verifier key: ``<name>+<hex key id>+<base64(0x01 || public key)>``;
* private key file: ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || 32-byte seed)>``;
* a note: the text (ending in a newline), a blank line, then one line per signature,
  ``— <name> <base64(key id || signature)>`` (an em dash, U+2014).

Parsing and hashing need the standard library only (``scripts/verify_receipts.py`` uses them);
the Ed25519 signature itself is checked with the ``cryptography`` package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

ALG_ED25519 = 0x01
SIGNATURE_PREFIX = "\u2014 "
MAX_NOTE_BYTES = 1 << 20  # a note larger than this is refused, not parsed
MAX_SIGNATURES = 100  # as Go's note.Open: more signature lines than this is a malformed note
_PRIVATE_PREFIX = "PRIVATE+KEY+"


class NoteError(ValueError):
    """A key or a note that is malformed, or a signature that does not verify."""


def check_name(name: str) -> str:
    """A key name: non-empty, no white space and no ``+`` (the signed-note rules)."""
    if not name or any(ch.isspace() or ch == "+" for ch in name):
        raise NoteError(f"a key name must be non-empty, without spaces or '+': {name[:80]!r}")
    return name


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    encoded = base64.b64encode(bytes([ALG_ED25519]) + public_key).decode("ascii")
    return f"{check_name(name)}+{key_id(name, public_key).hex()}+{encoded}"


@dataclass(frozen=True, slots=True)
class Verifier:
    name: str
    key_id: bytes
    public_key: bytes

    @property
    def text(self) -> str:
        return verifier_key(self.name, self.public_key)


def parse_verifier_key(text: str) -> Verifier:
    """``<name>+<hex key id>+<base64(0x01 || public key)>``, with the key id checked."""
    name, _, rest = text.strip().partition("+")
    hex_id, _, encoded = rest.partition("+")
    try:
        raw = base64.b64decode(encoded, validate=True)
        wanted = bytes.fromhex(hex_id)
    except (binascii.Error, ValueError):
        raise NoteError("the verifier key is not name+keyid+base64") from None
    if len(raw) != 33 or raw[0] != ALG_ED25519 or len(wanted) != 4:
        raise NoteError("the verifier key is not an Ed25519 key")
    verifier = Verifier(check_name(name), wanted, raw[1:])
    if key_id(name, verifier.public_key) != wanted:
        raise NoteError("the verifier key's id does not match its name and key")
    return verifier


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    """A C2SP tlog-checkpoint body: origin, decimal tree size, base64 root hash."""
    if not origin or "\n" in origin:
        raise NoteError("a checkpoint origin is one non-empty line")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode('ascii')}\n"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def parse_checkpoint(body: str) -> Checkpoint:
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint has an origin, a size and a root hash, each on its own line")
    origin, size, root = lines[0], lines[1], lines[2]
    if not origin or not size.isdigit() or (size != "0" and size.startswith("0")):
        raise NoteError("the checkpoint's origin or size is malformed")
    try:
        digest = base64.b64decode(root, validate=True)
    except binascii.Error:
        raise NoteError("the checkpoint's root hash is not base64") from None
    if len(digest) != 32:
        raise NoteError("the checkpoint's root hash is not a SHA-256 hash")
    return Checkpoint(origin, int(size), digest)


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


def split_note(note: str) -> tuple[str, list[Signature]]:
    """A note's text (with its final newline) and its signature lines, checked for form only."""
    if len(note.encode("utf-8")) > MAX_NOTE_BYTES:
        raise NoteError("the note is too large")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteError("a note is its text, a blank line, and signature lines")
    text, lines = note[: cut + 1], note[cut + 2 : -1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("the note has too many signatures")
    signatures = []
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("a signature line starts with an em dash and a space")
        name, space, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise NoteError("a signature is not base64") from None
        if not space or len(raw) < 5:
            raise NoteError("a signature line is malformed")
        signatures.append(Signature(check_name(name), raw[:4], raw[4:]))
    return text, signatures


def open_note(note: str, verifier: Verifier) -> str:
    """The note's text if ``verifier``'s key signed it; raises :class:`NoteError` otherwise.

    As the signed-note specification says: lines of other keys are ignored, and a line of this
    key whose signature fails rejects the whole note."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text, signatures = split_note(note)
    for signature in signatures:
        if (signature.name, signature.key_id) != (verifier.name, verifier.key_id):
            continue
        try:
            Ed25519PublicKey.from_public_bytes(verifier.public_key).verify(signature.signature, text.encode("utf-8"))
        except InvalidSignature:
            raise NoteError("the note's signature by this key does not verify") from None
        return text
    raise NoteError(f"the note is not signed by {verifier.name} ({verifier.key_id.hex()})")


class Signer:
    """An Ed25519 note signer (the private key never leaves this object)."""

    def __init__(self, name: str, seed: bytes) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        if len(seed) != 32:
            raise NoteError("an Ed25519 private key is 32 bytes")
        self.name = check_name(name)
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = Verifier(self.name, key_id(self.name, self.public_key), self.public_key)

    @classmethod
    def generate(cls, name: str) -> Signer:
        import secrets

        return cls(name, secrets.token_bytes(32))

    @classmethod
    def from_private_key(cls, text: str) -> Signer:
        """``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`` (Go's note key format)."""
        text = text.strip()
        if not text.startswith(_PRIVATE_PREFIX):
            raise NoteError("the signing key file does not hold a PRIVATE+KEY+ line")
        name, _, rest = text[len(_PRIVATE_PREFIX) :].partition("+")
        hex_id, _, encoded = rest.partition("+")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise NoteError("the signing key is not base64") from None
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("the signing key is not an Ed25519 key")
        signer = cls(name, raw[1:])
        if signer.verifier.key_id.hex() != hex_id:
            raise NoteError("the signing key's id does not match its name and key")
        return signer

    def private_key_text(self) -> str:
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        raw = self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        encoded = base64.b64encode(bytes([ALG_ED25519]) + raw).decode("ascii")
        return f"{_PRIVATE_PREFIX}{self.name}+{self.verifier.key_id.hex()}+{encoded}"

    def sign_bytes(self, data: bytes) -> bytes:
        """A raw Ed25519 signature (DSSE envelopes sign their PAE encoding with the same key)."""
        return self._key.sign(data)

    def sign(self, text: str) -> str:
        """``text`` (ending in a newline) as a note signed by this key."""
        if not text.endswith("\n") or "\n\n" in text:
            raise NoteError("a note's text ends in one newline and has no blank line")
        signature = self._key.sign(text.encode("utf-8"))
        encoded = base64.b64encode(self.verifier.key_id + signature).decode("ascii")
        return f"{text}\n{SIGNATURE_PREFIX}{self.name} {encoded}\n"
