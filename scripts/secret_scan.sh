#!/usr/bin/env bash
# Fails on a tracked file that holds a credential, found by the service's own scrubber
# (scripts/secret_scan.py says how; `.secret-scan-allow` lists the fixtures it skips).
# Exit 0 none found; 1 findings (path:line: kind, never the value); 2 it cannot scan.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-.venv}"
[[ "$venv" == /* ]] || venv="$here/$venv"
python="$venv/bin/python"  # the detector needs the service's packages (google-re2)
[[ -x "$python" ]] || { echo "secret_scan: $python is missing; run \`make lint\` first (it creates the virtualenv)" >&2; exit 2; }
exec "$python" "$here/scripts/secret_scan.py" "${1:-$here}"
