"""Is this checkout safe to publish? Nothing of a running service's state, no database, no `.env`
and no key is tracked, nor lying in the tree unignored, and `.gitignore` covers all of them.

    python3 scripts/public_boundary.py [REPO]     (scripts/verify_public_boundary.sh runs it)

Exit status: 0 and `PUBLIC BOUNDARY SAFE` when every check passes; 1 with one line per problem
(`BOUNDARY: ...`) otherwise; 2 when REPO is not a git checkout or git is missing. Standard library
only. Running the service does not make it fail: its state lives under the ignored `instance/`.
Credentials inside tracked files are `scripts/secret_scan.sh`'s business.
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
from pathlib import Path

# Paths that are a running service's state or a credential: never tracked, always ignored.
FORBIDDEN = (
    "instance/*",
    "*.db",
    "*.db-wal",
    "*.db-shm",
    "*.db-journal",
    "*.sqlite",
    "*.sqlite3",
    ".env",
    "*.pem",
    "*.key",
    "*dev-token",
    "*trust-signing-key",
    "*.jsonl",  # witness files, logs
    "*.log",
)
# What .gitignore must ignore, checked with git itself (a sample path for each kind).
MUST_IGNORE = (
    "instance/dev-token",
    "instance/trace.db",
    "trace.db",
    "trace.db-wal",
    "memory.db-shm",
    ".env",
    "server.pem",
    "signing.key",
)
REQUIRED = (".env.example", ".gitignore")


def git(repo: Path, *args: str, ok: tuple[int, ...] = (0,)) -> list[str]:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if result.returncode not in ok:
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
    return [line for line in result.stdout.split("\0" if "-z" in args else "\n") if line]


def forbidden(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(name, pattern) for pattern in FORBIDDEN)


def problems(repo: Path) -> list[str]:
    found = []
    for path in git(repo, "ls-files", "-z"):
        if forbidden(path):
            found.append(f"tracked: {path} (runtime state or a credential; `git rm --cached {path}`)")
    for path in git(repo, "ls-files", "-z", "--others", "--exclude-standard"):
        if forbidden(path):
            found.append(f"not ignored: {path} (add it to .gitignore or remove it)")
    # check-ignore answers 1 when none of the paths is ignored.
    ignored = set(git(repo, "check-ignore", "--no-index", *MUST_IGNORE, ok=(0, 1)))
    for sample in MUST_IGNORE:
        if sample not in ignored:
            found.append(f".gitignore does not ignore {sample}")
    for name in REQUIRED:
        if not (repo / name).is_file():
            found.append(f"missing: {name}")
    return found


def main() -> int:
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    try:
        git(repo, "rev-parse", "--git-dir")
        found = problems(repo)
    except (OSError, subprocess.CalledProcessError) as exc:
        stderr = getattr(exc, "stderr", "") or str(exc)
        print(f"BOUNDARY: {repo} is not a git checkout (or git is missing): {stderr.strip()}", file=sys.stderr)
        return 2
    for problem in found:
        print(f"BOUNDARY: {problem}")
    if found:
        print(f"PUBLIC BOUNDARY NOT SAFE: {len(found)} problem(s)")
        return 1
    print("PUBLIC BOUNDARY SAFE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
