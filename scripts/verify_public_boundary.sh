#!/usr/bin/env bash
# Is this checkout safe to publish? No runtime state, database, .env or key tracked or lying
# unignored, and .gitignore covers them all (scripts/public_boundary.py says what it checks).
# Exit 0 and "PUBLIC BOUNDARY SAFE"; 1 with one line per problem; 2 when this is not a git checkout.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
exec python3 "$here/scripts/public_boundary.py" "${1:-$here}"
