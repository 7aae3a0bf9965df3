#!/usr/bin/env bash
# Make a Docker engine available on a Debian (bookworm) machine, idempotently.
#
# Usage: scripts/ensure_docker.sh
#   - installs docker.io with apt if `dockerd` is missing (root required);
#   - if `docker info` fails, starts dockerd in the background (no systemd
#     needed), logging to $ORCH_DOCKERD_LOG, and waits until it answers;
#   - prints ONE summary line on stdout (last line), progress on stderr.
#   When the engine is already up this costs one `docker info` (~0.1 s).
#
# Environment:
#   ORCH_DOCKERD_FLAGS    if set: the ONLY flag set tried (no fallbacks), e.g.
#                         "--iptables=false --bridge=none"
#   ORCH_DOCKERD_LOG      daemon log (default: /var/log/dockerd-orch.log)
#   ORCH_DOCKERD_TIMEOUT  seconds to wait for the daemon (default: 60)
#
# dockerd flags: tested on a Firecracker VM (kernel 6.18, cgroup v1 hybrid,
# ext4 root, no systemd): plain `dockerd` works there - overlay2 storage
# driver (the fastest one; vfs copies every layer), cgroupfs cgroup driver,
# iptables + the docker0 bridge, and memory/swap/pids limits are enforced.
# So the first attempt uses NO extra flags (dockerd picks the best storage
# driver itself). Only if the daemon dies / never answers do we retry with
# fallbacks for more restricted hosts (e.g. docker-in-docker, unprivileged
# containers): no iptables/bridge (the sandbox always uses --network none),
# then additionally the slow-but-universal vfs storage driver. NB: images are
# per storage driver - after falling back to vfs, re-run
# scripts/build_sandbox_image.sh (seconds, from its cached rootfs tarball).
set -euo pipefail

LOG="${ORCH_DOCKERD_LOG:-/var/log/dockerd-orch.log}"
TIMEOUT="${ORCH_DOCKERD_TIMEOUT:-60}"

log() { echo "ensure_docker: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

summary() {
    # One line: server version, storage driver, cgroup driver/version, and
    # whether the kernel/daemon can enforce the limits the sandbox relies on.
    docker info --format \
        'docker ok: server={{.ServerVersion}} storage={{.Driver}} cgroup={{.CgroupDriver}}/v{{.CgroupVersion}} mem-limit={{.MemoryLimit}} swap-limit={{.SwapLimit}} pids-limit={{.PidsLimit}} root={{.DockerRootDir}}'
    local warnings
    warnings="$(docker info --format '{{range .Warnings}}{{.}}; {{end}}' 2>/dev/null || true)"
    [[ -z "$warnings" ]] || log "docker info warnings: $warnings"
}

# Fast path: engine already answering.
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    summary
    exit 0
fi

[[ "$(id -u)" == 0 ]] || die "docker is not reachable and starting dockerd needs root (run as root, or start the daemon yourself)"

# Serialize concurrent runs: two dockerds racing on /var/lib/docker is bad.
exec 9>/run/orch-ensure-docker.lock
flock -w $((TIMEOUT * 3)) 9 || die "another ensure_docker.sh holds /run/orch-ensure-docker.lock for > $((TIMEOUT * 3))s"
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    summary   # a concurrent run started it while we waited
    exit 0
fi

apt_install() {
    # apt-get update only when the first install attempt fails (stale lists). -q, not -qq: its
    # Get:/Unpacking/Setting up lines are the progress of a step that takes ~30 s.
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q -o Dpkg::Use-Pty=0 "$@" >&2; then
        log "apt-get install $* failed; running apt-get update and retrying"
        apt-get update -qq >&2
        apt-get install -y -q -o Dpkg::Use-Pty=0 "$@" >&2
    fi
}

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    log "installing docker.io with apt (first run, ~30 s)"
    apt_install docker.io
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after installing docker.io"

# Without systemd nobody may have mounted the cgroup hierarchy.
if [[ -d /sys/fs/cgroup ]] && [[ -z "$(ls -A /sys/fs/cgroup 2>/dev/null)" ]]; then
    log "/sys/fs/cgroup is empty; mounting cgroup2 there"
    mount -t cgroup2 cgroup2 /sys/fs/cgroup || log "WARNING: could not mount cgroup2; resource limits may not work"
fi

daemon_running() {
    # A dockerd that is up but not (yet) answering: don't start a second one.
    local pid
    [[ -s /var/run/docker.pid ]] || return 1
    pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]]
}

# wait_for PID: 0 when docker info answers, 1 when dockerd died, 2 on timeout.
wait_for() {
    local pid="$1" deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        docker info >/dev/null 2>&1 && return 0
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.25
    done
    return 2
}

start_dockerd() {
    # $@: dockerd flags. setsid+nohup: the daemon survives this shell/session.
    mkdir -p "$(dirname "$LOG")"
    echo "=== $(date -u +%FT%TZ) ensure_docker.sh: dockerd $*" >>"$LOG"
    # 9>&-: the daemon must not inherit (and hold forever) the flock fd.
    setsid nohup dockerd "$@" >>"$LOG" 2>&1 </dev/null 9>&- &
    echo $!
}

if daemon_running; then
    pid="$(cat /var/run/docker.pid)"
    log "dockerd (pid $pid) already running but not answering yet; waiting up to ${TIMEOUT}s"
    if wait_for "$pid"; then summary; exit 0; fi
    die "dockerd pid $pid is running but 'docker info' still fails after ${TIMEOUT}s; see $LOG"
fi

if [[ -n "${ORCH_DOCKERD_FLAGS:-}" ]]; then
    attempts=("${ORCH_DOCKERD_FLAGS}")   # one attempt, exactly these flags
else
    attempts=(
        ""                                                              # defaults: overlay2 + bridge
        "--iptables=false --ip6tables=false --bridge=none"              # no netfilter / bridge
        "--iptables=false --ip6tables=false --bridge=none --storage-driver=vfs"  # no overlayfs either
    )
fi

for flags in "${attempts[@]}"; do
    log "starting dockerd ${flags:-(default flags)}; log: $LOG"
    # shellcheck disable=SC2086  # word splitting of the flag string intended
    pid="$(start_dockerd $flags)"
    rc=0; wait_for "$pid" || rc=$?
    if ((rc == 0)); then
        log "dockerd up (pid $pid, flags: ${flags:-none})"
        summary
        exit 0
    fi
    if ((rc == 2)); then
        die "dockerd (pid $pid) did not answer 'docker info' within ${TIMEOUT}s; last log lines:
$(tail -n 20 "$LOG")"
    fi
    # Ours died - maybe because another dockerd won the race (a concurrent
    # run of this script, or the package's init script right after apt
    # install): then wait for that one instead of trying other flags.
    if daemon_running; then
        other="$(cat /var/run/docker.pid)"
        log "another dockerd (pid $other) is running; waiting for it"
        if wait_for "$other"; then summary; exit 0; fi
        die "dockerd pid $other is running but 'docker info' still fails; see $LOG"
    fi
    log "dockerd exited with flags '${flags:-none}'; last log lines:"
    tail -n 5 "$LOG" >&2
    rm -f /var/run/docker.pid
done
die "could not start dockerd with any flag set; see $LOG"
