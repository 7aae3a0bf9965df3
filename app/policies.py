"""The policy snapshot: which policy files (and enforcement flags) the service runs with.

Components that load a policy file (the tool policy, the router policy, agents) register it here.
Its hash is recorded in every trace (`policy_snapshot` step), so an auditor can later ask whether
a request was served under the policy that is on disk now (``POST /v1/audit/verify``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.receipts.chain import canonical

_MISSING = "missing"


@dataclass
class PolicySnapshot:
    documents: dict[str, Path] = field(default_factory=dict)  # name -> file or directory
    flags: dict[str, Any] = field(default_factory=dict)  # enforcement switches that change meaning
    loaded_hash: str = ""

    def register(self, name: str, path: Path, **flags: Any) -> None:
        self.documents[name] = path
        self.flags.update({f"{name}.{key}": value for key, value in flags.items()})

    @staticmethod
    def _digest(path: Path) -> str:
        if path.is_dir():
            parts = [f"{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in sorted(path.glob("*.y*ml"))]
            return hashlib.sha256("\n".join(parts).encode()).hexdigest()
        if path.is_file():
            return hashlib.sha256(path.read_bytes()).hexdigest()
        return _MISSING

    def describe(self) -> dict[str, Any]:
        """What the hash covers: each document's path and content hash, and the flags."""
        return {
            "documents": {
                name: {"path": str(path), "sha256": self._digest(path)} for name, path in self.documents.items()
            },
            "flags": self.flags,
        }

    def current_hash(self) -> str:
        """The hash of the policy files as they are on disk now."""
        return hashlib.sha256(canonical(self.describe()).encode()).hexdigest()

    def freeze(self) -> str:
        """Record the hash of what was loaded at startup."""
        self.loaded_hash = self.current_hash()
        return self.loaded_hash
