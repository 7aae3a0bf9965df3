#!/usr/bin/env bash
# Make Debian's headless Chromium available for the browser tests, idempotently.
#
# Usage: scripts/ensure_chromium.sh
#   - when `chromium` is on PATH: prints its version and exits (~0.1 s);
#   - otherwise installs Debian's `chromium` package with apt (root required) and prints what it
#     did. Playwright drives this binary (executable_path): Playwright's own browser download
#     fetches from outside the package registries, which a local-first machine may not reach.
#   - prints ONE summary line on stdout (last line), progress on stderr.
set -euo pipefail

log() { echo "ensure_chromium: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

summary() {
    echo "chromium ok: $(command -v chromium) ($(chromium --version 2>/dev/null | head -n 1))"
}

if command -v chromium >/dev/null 2>&1; then
    summary
    exit 0
fi

[[ "$(id -u)" == 0 ]] || die "chromium is missing and installing it needs root (run as root, or: apt-get install chromium)"

# Serialize concurrent runs: two apt-gets on one dpkg database wait on each other's lock anyway,
# and the second would install nothing.
exec 9>/run/orch-ensure-chromium.lock
log "waiting for the install lock /run/orch-ensure-chromium.lock (since $(date -u +%T))"
flock -w 900 9 || die "another ensure_chromium.sh holds /run/orch-ensure-chromium.lock for > 900 s"
if command -v chromium >/dev/null 2>&1; then
    summary   # a concurrent run installed it while we waited
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
started=$SECONDS
log "installing Debian's chromium package with apt (about 100 MB to download, a minute or two)"
if ! apt-get install -y -q --no-install-recommends chromium >&2; then
    log "apt-get install chromium failed; running apt-get update and retrying"
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends chromium >&2
fi
command -v chromium >/dev/null 2>&1 || die "chromium still missing after installing the package"
log "installed chromium in $((SECONDS - started)) s"
summary
