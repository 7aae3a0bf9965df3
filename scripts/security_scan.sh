#!/usr/bin/env bash
# Security scan: bandit over app/ (settings in pyproject.toml [tool.bandit]) and pip-audit over the
# pinned runtime set (requirements.lock), both from the dev virtualenv (`make lint` creates it).
#
# Exit status: 0 clean; 1 bandit found an issue or pip-audit a known vulnerability; 2 a tool is
# missing; 3 (only with ORCH_SECURITY_STRICT=1) pip-audit could not check some packages because
# the vulnerability service did not answer for them. Without strict mode that case is a warning:
# a machine that reaches the package index but no vulnerability database (PyPI's per-release JSON,
# which pip-audit asks, is not served by every mirror) still gets bandit's verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"
for tool in bandit pip-audit; do
  [[ -x "$BIN/$tool" ]] || { echo "security_scan: $BIN/$tool is missing; run \`make lint\` first (it installs the dev set)" >&2; exit 2; }
done

echo "security_scan: bandit over app/ ..."
"$BIN/bandit" -q -c pyproject.toml -r app || { echo "security_scan: bandit found the issues above"; exit 1; }
echo "security_scan: bandit: no issues"

echo "security_scan: pip-audit over requirements.lock (asks PyPI for each pinned release) ..."
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
set +e
timeout 600 "$BIN/pip-audit" -r requirements.lock --no-deps --disable-pip --progress-spinner off \
  -f json -o "$report" 2>/dev/null
status=$?
set -e
verdict="$("$BIN/python" - "$report" <<'PY'
import json, sys
try:
    deps = json.load(open(sys.argv[1])).get("dependencies", [])
except (OSError, ValueError):
    print("error 0 0")
    raise SystemExit
vulnerable = [f"{d['name']}=={d.get('version')}: {', '.join(v['id'] for v in d['vulns'])}" for d in deps if d.get("vulns")]
skipped = [d["name"] for d in deps if d.get("skip_reason")]
for line in vulnerable:
    print("vulnerable", line, file=sys.stderr)
print("ok" if not vulnerable else "vulnerable", len(deps), len(skipped))
PY
)"
read -r outcome total skipped <<<"$verdict"
if [[ "$outcome" == vulnerable ]]; then
  echo "security_scan: pip-audit: known vulnerabilities in the pinned set (above)"; exit 1
fi
if [[ "$outcome" == error ]]; then
  echo "security_scan: pip-audit gave no report (exit $status)"; skipped=1; total=0
fi
if (( skipped > 0 )); then
  echo "security_scan: pip-audit could not check $skipped of $total packages: the vulnerability service did not answer for them"
  [[ "${ORCH_SECURITY_STRICT:-0}" == 1 ]] && exit 3
  echo "security_scan: WARNING (not strict): those packages are unchecked"
else
  echo "security_scan: pip-audit: no known vulnerabilities in $total packages"
fi
