"""Does a tracked file hold a credential? Every tracked text file is read line by line through the
service's own detector (`app.scrub.find_secrets`, the scrubber that guards memory, receipts and
logs), so the scan and the service agree on what a secret looks like.

The scan reports the kinds that are a credential wherever they stand: the token shapes (AWS,
GitHub, GitLab, Slack, Stripe, Google, OpenAI/Anthropic, Hugging Face, npm, PyPI), private keys,
JWTs, HTTP Basic credentials and URLs with a password. The kinds the scrubber judges by context
(a value assigned to a key named like a credential, "my password is ...", a bearer value, a
high-entropy run near a key word) are left to the service: source code is full of `token = ...`
assignments and prose about bearer tokens, which are not secrets.

    python scripts/secret_scan.py [REPO]        (scripts/secret_scan.sh runs it in the venv)

Paths listed in `.secret-scan-allow` (one glob a line, `#` comments; each with its reason) are
skipped: test fixtures that must hold fake credentials. A finding prints `path:line: kind` and
never the value. Exit status: 0 none found; 1 findings; 2 not a git checkout or the detector
cannot be imported.
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
from pathlib import Path

MAX_FILE_BYTES = 1 << 20  # larger tracked files are data, not configuration: skipped and listed
CONTEXT_KINDS = frozenset({"credential_assignment", "credential_phrase", "bearer", "high_entropy"})
ALLOW_FILE = ".secret-scan-allow"


def allowed_globs(repo: Path) -> list[str]:
    path = repo / ALLOW_FILE
    if not path.is_file():
        return []
    globs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        glob = line.split("#", 1)[0].strip()
        if glob:
            globs.append(glob)
    return globs


def tracked(repo: Path) -> list[str]:
    result = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, text=True, check=True)
    return [path for path in result.stdout.split("\0") if path]


ROOT = Path(__file__).resolve().parents[1]  # the checkout whose detector is used


def scan(repo: Path) -> tuple[list[str], list[str]]:
    sys.path.insert(0, str(ROOT))
    from app.scrub import find_secrets

    allow = allowed_globs(repo)
    findings, skipped = [], []
    for path in tracked(repo):
        if any(fnmatch.fnmatch(path, glob) for glob in allow):
            continue
        file = repo / path
        if not file.is_file() or file.is_symlink():
            continue
        if file.stat().st_size > MAX_FILE_BYTES:
            skipped.append(path)
            continue
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        for number, line in enumerate(text.splitlines(), start=1):
            kinds = sorted({found.kind for found in find_secrets(line)} - CONTEXT_KINDS)
            if kinds:
                findings.append(f"{path}:{number}: {', '.join(kinds)}")
    return findings, skipped


def main() -> int:
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    try:
        findings, skipped = scan(repo)
    except (OSError, subprocess.CalledProcessError, ImportError) as exc:
        print(f"secret_scan: cannot scan {repo}: {exc}", file=sys.stderr)
        return 2
    for path in skipped:
        print(f"secret_scan: skipped {path} (over {MAX_FILE_BYTES} bytes)")
    for finding in findings:
        print(f"SECRET: {finding}")
    if findings:
        print(f"secret_scan: {len(findings)} credential-looking value(s) in tracked files (values not shown)")
        return 1
    print("secret_scan: no credentials in tracked files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
