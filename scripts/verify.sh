#!/usr/bin/env bash
# Everything a change must pass before it is published, in the order CI runs it: lint, the public
# boundary, the secret scan, the security scan, then the whole test suite (`make test`).
# Exit status: the first failing step's (each script documents its own codes).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "== verify: $*"; }
step "lint (ruff, mypy)";         make lint
step "public boundary";           scripts/verify_public_boundary.sh
step "secret scan";               scripts/secret_scan.sh
step "security scan";             scripts/security_scan.sh
step "tests";                     make test
echo "== verify: all passed"
