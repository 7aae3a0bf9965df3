#!/usr/bin/env bash
# Make the tools the deployment tests check our files with available, idempotently: Debian's
# docker-compose (`docker-compose config` on compose.yaml's profiles) and promtool, from Debian's
# prometheus package (the alert rules, the scrape config, the dashboard's queries).
#
# Usage: scripts/ensure_deploy_tools.sh
#   - when both are on PATH: prints their versions and exits (~0.1 s);
#   - otherwise installs the missing packages with apt (root required; the prometheus daemon the
#     package would start is kept from starting) and prints what it did.
#   - prints ONE summary line on stdout (last line), progress on stderr.
set -euo pipefail

log() { echo "ensure_deploy_tools: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

summary() {
    echo "deploy tools ok: $(docker-compose version --short 2>/dev/null | head -n 1) (docker-compose)," \
        "$(promtool --version 2>&1 | head -n 1 | awk '{print $3}') (promtool)"
}

missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if (( ${#missing[@]} == 0 )); then
    summary
    exit 0
fi
[[ "$(id -u)" == 0 ]] || die "missing ${missing[*]}; installing needs root (run as root, or: apt-get install ${missing[*]})"

exec 9>/run/orch-ensure-deploy-tools.lock
log "waiting for the install lock /run/orch-ensure-deploy-tools.lock (since $(date -u +%T))"
flock -w 900 9 || die "another ensure_deploy_tools.sh holds the lock for > 900 s"

export DEBIAN_FRONTEND=noninteractive
# No daemon of these packages starts: they are installed for their command-line tools only.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[[ $created_policy == 1 ]] && rm -f "$policy"' EXIT
started=$SECONDS
log "installing ${missing[*]} with apt"
if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    log "apt-get install failed; running apt-get update and retrying"
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
command -v docker-compose >/dev/null 2>&1 || die "docker-compose still missing after the install"
command -v promtool >/dev/null 2>&1 || die "promtool still missing after installing prometheus"
log "installed ${missing[*]} in $((SECONDS - started)) s"
summary
