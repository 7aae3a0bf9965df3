"""The receipt log's signer: every ``ORCH_TRUST_CHECKPOINT_INTERVAL_SEC`` when the tree grew, and
once more at shutdown, the tree's size and root are signed as a C2SP checkpoint, stored, and
appended to the witness file if one is configured.

It runs beside the receipts writer, never on the request path. Replicas that share a database
and a key sign the same text for the same tree (the tree and Ed25519 are deterministic), so the
log has one checkpoint stream whatever the number of signers.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from app.observability.logging import get_logger
from app.receipts.notes import NoteError, Signer, checkpoint_body
from app.receipts.store import TraceStore, TreeIncomplete
from app.tasks import cancel_and_wait

log = get_logger("tracing")

KEY_NAME_PREFIX = "orchestrators.local/receipts-"  # a generated key's name (and so the log's origin)


class SigningKeyError(RuntimeError):
    """The signing key file cannot be used (the message says why and which flag names it)."""


def load_or_create_signer(path: Path) -> Signer:
    """The signing key in ``path``, generated there (mode 0600) on first start."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"ORCH_TRUST_SIGNING_KEY_PATH={path} cannot be read: {exc}") from None
    if text.strip():
        if os.name == "posix" and path.stat().st_mode & 0o077:
            raise SigningKeyError(
                f"ORCH_TRUST_SIGNING_KEY_PATH={path} is readable by other users; run `chmod 600 {path}`"
            )
        try:
            return Signer.from_private_key(text)
        except NoteError as exc:
            raise SigningKeyError(f"ORCH_TRUST_SIGNING_KEY_PATH={path}: {exc}") from None
    signer = Signer.generate(KEY_NAME_PREFIX + os.urandom(4).hex())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: of several workers starting at once, the first one's key is everyone's.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            text = path.read_text(encoding="ascii")
            if text.strip():
                return Signer.from_private_key(text)
            time.sleep(0.01)
        raise SigningKeyError(f"ORCH_TRUST_SIGNING_KEY_PATH={path} is empty; delete it to generate a key") from None
    except OSError as exc:
        raise SigningKeyError(f"ORCH_TRUST_SIGNING_KEY_PATH={path} cannot be created: {exc}") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(signer.private_key_text() + "\n")
    log.info("generated the receipt log's signing key", extra={"key": signer.verifier.text})
    return signer


def checkpoint_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "tree_size": int(row["tree_size"]),
        "root_hash": row["root_hash"],
        "key_id": row["key_id"],
        "created_at": row["created_at"],
        "note": row["note"],
    }


class Checkpointer:
    """Signs the log's checkpoints in the background (see the module docstring)."""

    def __init__(
        self, store: TraceStore, signer: Signer, *, origin: str, interval: float, witness_path: Path | None
    ) -> None:
        self.store = store
        self.signer = signer
        self.origin = origin or signer.name
        self.interval = interval
        self.witness_path = witness_path
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._warned_shorter = False

    async def start(self) -> None:
        await self.store.add_key(
            self.signer.verifier.key_id.hex(), self.signer.verifier.text, datetime.now(UTC).isoformat()
        )
        self._task = asyncio.create_task(self._run(), name="receipt-checkpoints")

    async def stop(self) -> None:
        """Stop the loop, then sign what the drained writer committed last."""
        await cancel_and_wait(self._task)
        self._task = None
        await self._sign_logged()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self._sign_logged()

    async def _sign_logged(self) -> None:
        try:
            await self.sign()
        except TreeIncomplete as exc:
            log.warning("no checkpoint signed: the receipt tree is incomplete (%s)", exc)
        except Exception as exc:  # a database outage: the next round tries again
            log.warning("no checkpoint signed: %s", type(exc).__name__)

    async def sign(self) -> dict[str, Any] | None:
        """Sign the tree as it is now if it grew since the latest checkpoint; return the latest."""
        async with self._lock:
            size = await self.store.tree_size()
            latest = await self.store.latest_checkpoint()
            if latest is not None and int(latest["tree_size"]) >= size:
                if int(latest["tree_size"]) > size and not self._warned_shorter:
                    self._warned_shorter = True
                    log.error(
                        "the receipt log is shorter than its latest signed checkpoint: the database was rolled "
                        "back or entries were deleted",
                        extra={"tree_size": size, "checkpoint_size": int(latest["tree_size"])},
                    )
                return latest
            if size == 0:
                return None
            root = await self.store.tree_root(size)
            note = self.signer.sign(checkpoint_body(self.origin, size, root))
            root_hash = base64.b64encode(root).decode("ascii")
            key_id = self.signer.verifier.key_id.hex()
            created_at = datetime.now(UTC).isoformat()
            row: dict[str, Any] = {
                "tree_size": size,
                "root_hash": root_hash,
                "key_id": key_id,
                "note": note,
                "created_at": created_at,
            }
            if await self.store.add_checkpoint(size, root_hash, key_id, note, created_at):
                self._witness(row)
            return await self.store.checkpoint(size) or row

    def _witness(self, row: dict[str, Any]) -> None:
        """Append the checkpoint to the witness file: one JSON object per line."""
        if self.witness_path is None:
            return
        try:
            with self.witness_path.open("ab") as handle:
                handle.write(orjson.dumps(checkpoint_view(row)) + b"\n")
        except OSError as exc:
            log.warning("the checkpoint was not appended to ORCH_TRUST_WITNESS_PATH: %s", exc.strerror)
