#!/usr/bin/env bash
# Build the locked-down sandbox image the service runs untrusted Python in,
# fully offline (no container registry): debootstrap a minimal Debian bookworm
# with python3 (full stdlib) from the machine's apt mirror and `docker import` it.
#
# Usage: scripts/build_sandbox_image.sh [--force] [--dockerfile]
#   --force       rebuild the image even if it exists (reuses the cached rootfs
#                 tarball; delete it or bump RECIPE_VERSION to re-debootstrap)
#   --dockerfile  build FROM $ORCH_SANDBOX_BASE (default python:3.12-slim)
#                 with `docker build` instead; needs a reachable registry (or
#                 the base image already present locally). Optional path.
#   Prints "<image> <size>" as the LAST line of stdout; progress on stderr.
#   Requires root (debootstrap, chroot) and a running docker engine
#   (see scripts/ensure_docker.sh).
#
# Environment:
#   ORCH_SANDBOX_IMAGE   image name (default: orchestrators-sandbox:$RECIPE_VERSION)
#   ORCH_CACHE_DIR       cache root (default: $HOME/.cache/orchestrators)
#   ORCH_DEBIAN_MIRROR   Debian mirror for debootstrap (default: the one in
#                        /etc/apt/sources.list{,.d} serving bookworm, else
#                        http://deb.debian.org/debian)
#   ORCH_SANDBOX_BASE    base image for --dockerfile (default python:3.12-slim)
#
# Image contract (what the service may rely on):
#   - python3 3.11 from Debian bookworm with the full standard library
#     (package `python3`), run it as `python3 -I -S`; no pip, no third-party
#     packages;
#   - user `sandbox`, uid:gid 10001:10001 (a dedicated id, NOT 65534/nobody,
#     which the host may use for other things), image USER 10001:10001;
#   - WORKDIR /tmp, /tmp mode 1777 (mount a tmpfs there with --read-only);
#   - no apt, perl, util-linux/mount, login/passwd/su; no docs/man/locales;
#     no setuid/setgid binaries (dpkg and its status DB are kept for scanners);
#   - label org.orchestrators.sandbox.recipe=$RECIPE_VERSION.
#
# Cache layout:
#   $ORCH_CACHE_DIR/sandbox/
#       rootfs-v$RECIPE_VERSION-$ARCH.tar   slimmed rootfs, input to docker import
#       .lock                              flock(1) lock file
set -euo pipefail

# Bump when the recipe below changes (it is the default image tag and the
# rootfs cache key).
RECIPE_VERSION=1
SUITE=bookworm
SANDBOX_UID=10001
SANDBOX_GID=10001
# `python3` (not just python3-minimal): python3-minimal lacks json, decimal,
# fractions, statistics, dataclasses, asyncio, sqlite3, ctypes, zoneinfo -
# model-written code imports those all the time. Costs ~+25 MB.
PACKAGES="python3"
# Purged after debootstrap: not needed to run python3 -I -S.
REMOVE_PACKAGES="apt libapt-pkg6.0 gpgv debian-archive-keyring adduser e2fsprogs
    logsave passwd login mount util-linux util-linux-extra bsdutils debconf perl-base"

IMAGE="${ORCH_SANDBOX_IMAGE:-orchestrators-sandbox:$RECIPE_VERSION}"
CACHE_ROOT="${ORCH_CACHE_DIR:-$HOME/.cache/orchestrators}"
CACHE="$CACHE_ROOT/sandbox"
ARCH="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
TARBALL="$CACHE/rootfs-v$RECIPE_VERSION-$ARCH.tar"

log() { echo "build_sandbox_image: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

FORCE=0
DOCKERFILE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --dockerfile) DOCKERFILE=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (use --force, --dockerfile)" ;;
    esac
done

command -v docker >/dev/null 2>&1 || die "docker CLI missing; run scripts/ensure_docker.sh first"
docker info >/dev/null 2>&1 || die "docker engine not reachable; run scripts/ensure_docker.sh first"

image_exists() { docker image inspect "$IMAGE" >/dev/null 2>&1; }

report() {
    local size
    size="$(docker image inspect --format '{{.Size}}' "$IMAGE")"
    echo "$IMAGE $((size / 1000 / 1000))MB ($size bytes)"
}

if ((FORCE == 0)) && image_exists; then
    log "$IMAGE already present (use --force to rebuild)"
    report
    exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
    log "another build holds $CACHE/.lock; waiting (up to 20 min)"
    flock -w 1200 9 || die "timed out waiting for $CACHE/.lock"
fi
# Someone else may have built it while we waited for the lock.
if ((FORCE == 0)) && image_exists; then
    log "$IMAGE was built by a concurrent run"
    report
    exit 0
fi

# With --force the previous image becomes dangling: remember it, drop it after.
OLD_ID="$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
drop_old_image() {
    local new_id
    new_id="$(docker image inspect --format '{{.Id}}' "$IMAGE")"
    if [[ -n "$OLD_ID" && "$OLD_ID" != "$new_id" ]]; then
        # Fails harmlessly if a container still uses it or it has other tags.
        docker image rm "$OLD_ID" >/dev/null 2>&1 || true
    fi
}

smoke_test() {
    # The image must run python3 under the service's lockdown flags.
    local out
    out="$(docker run --rm --network none --read-only \
        --tmpfs /tmp:rw,noexec,nosuid,size=16m --cap-drop ALL \
        --security-opt no-new-privileges --pids-limit 64 --memory 256m \
        --memory-swap 256m "$IMAGE" python3 -I -S -c \
        'import os, sys; print(os.getuid(), os.getgid(), sys.version_info[:2], os.getcwd())')" \
        || { docker image rm -f "$IMAGE" >/dev/null 2>&1 || true; die "smoke test of $IMAGE failed"; }
    log "smoke test: uid gid version cwd = $out"
}

# --- optional: docker build from a registry base image -----------------------
if ((DOCKERFILE == 1)); then
    BASE="${ORCH_SANDBOX_BASE:-python:3.12-slim}"
    if ! docker image inspect "$BASE" >/dev/null 2>&1; then
        docker pull "$BASE" >&2 || die "cannot pull $BASE (no registry?); run without --dockerfile for the offline build"
    fi
    log "docker build $IMAGE FROM $BASE"
    # Legacy builder: the debian docker.io engine ships without buildx.
    DOCKER_BUILDKIT=0 docker build --no-cache -t "$IMAGE" \
        --label "org.orchestrators.sandbox.recipe=$RECIPE_VERSION-dockerfile" - >&2 <<EOF
FROM $BASE
RUN set -eu; \
    groupadd -g $SANDBOX_GID sandbox; \
    useradd -u $SANDBOX_UID -g $SANDBOX_GID -d /tmp -s /usr/sbin/nologin -M sandbox; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/* /usr/share/info/*; \
    find / -xdev -type f -perm /6000 -exec chmod a-s {} + ; \
    chmod 1777 /tmp
ENV PATH=/usr/local/bin:/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8
WORKDIR /tmp
USER $SANDBOX_UID:$SANDBOX_GID
CMD ["python3", "-I", "-S"]
EOF
    smoke_test
    drop_old_image
    report
    exit 0
fi

# --- offline build: debootstrap -> slim -> tar (cached) -> docker import -----
find_mirror() {
    # First apt source (deb822 *.sources or one-line *.list) whose suites
    # include plain "$SUITE" (not -security/-updates): its URI is the mirror.
    local f uri
    shopt -s nullglob
    for f in /etc/apt/sources.list.d/*.sources; do
        uri="$(awk -v suite="$SUITE" '
            BEGIN { RS=""; FS="\n" }      # one deb822 stanza per record
            {
                types=""; uris=""; suites=""; enabled="yes"
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/)   types = $i
                    if ($i ~ /^URIs:/)    { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
                    if ($i ~ /^Suites:/)  suites = $i
                    if ($i ~ /^Enabled:[ \t]*no/) enabled = "no"
                }
                if (enabled == "yes" && types ~ /(^|[ \t])deb([ \t]|$)/ &&
                    (" " suites " ") ~ ("[ \t]" suite "[ \t]")) {
                    split(uris, u, /[ \t]+/); print u[1]; exit
                }
            }' "$f")"
        [[ -n "$uri" ]] && { echo "$uri"; return 0; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r "$f" ]] || continue
        uri="$(awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }   # [options]
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f")"
        [[ -n "$uri" ]] && { echo "$uri"; return 0; }
    done
    return 1
}

debootstrap_progress() {
    # Every 5 s while debootstrap (PID $1) runs: its phase, how many packages that phase has done
    # of the ~110 it retrieves, and the package at hand (its log, $2, gets one "I: <Phase> <pkg>"
    # line per package and phase: Retrieving, Validating, Extracting, Unpacking, Configuring).
    local pid="$1" logfile="$2" start=$SECONDS last phase done total
    while kill -0 "$pid" 2>/dev/null; do
        sleep 5
        last="$(grep '^I: ' "$logfile" 2>/dev/null | tail -n 1 | cut -c4-)" || true
        [[ -n "$last" ]] || continue
        phase="${last%% *}"
        case "$phase" in
            Retrieving | Validating | Extracting | Unpacking | Configuring)
                total="$(grep -c '^I: Retrieving [a-z0-9]' "$logfile" 2>/dev/null)" || total=0
                done="$(grep -c "^I: $phase [a-z0-9]" "$logfile" 2>/dev/null)" || done=0
                log "debootstrap $((SECONDS - start))s: $phase, $done of ~$total packages ($last)" ;;
            *) log "debootstrap $((SECONDS - start))s: $last" ;;
        esac
    done
}

build_rootfs_tarball() {
    local mirror dir t0=$SECONDS
    command -v debootstrap >/dev/null 2>&1 || {
        log "installing debootstrap (apt)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q -o Dpkg::Use-Pty=0 debootstrap >&2 ||
            { apt-get update -qq >&2; apt-get install -y -q -o Dpkg::Use-Pty=0 debootstrap >&2; }
    }
    mirror="${ORCH_DEBIAN_MIRROR:-$(find_mirror || echo http://deb.debian.org/debian)}"
    dir="$(mktemp -d "${TMPDIR:-/tmp}/orch-sandbox-rootfs.XXXXXX")"
    [[ -n "$dir" && "$dir" != / && -d "$dir" ]] || die "mktemp failed"
    # shellcheck disable=SC2064
    trap "rm -rf '$dir' '$TARBALL.tmp'" EXIT

    log "debootstrap --variant=minbase --include=$PACKAGES $SUITE from $mirror (~1-2 min; progress every 5 s)"
    debootstrap --variant=minbase --include="$PACKAGES" \
        "$SUITE" "$dir" "$mirror" >"$CACHE/debootstrap.log" 2>&1 &
    local pid=$! rc=0
    debootstrap_progress "$pid" "$CACHE/debootstrap.log" &
    local monitor=$!
    wait "$pid" || rc=$?
    kill "$monitor" 2>/dev/null || true
    wait "$monitor" 2>/dev/null || true
    ((rc == 0)) || { tail -n 30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (full log: $CACHE/debootstrap.log)"; }
    log "debootstrap done in $((SECONDS - t0))s; slimming"

    # Tools the sandbox never needs (package management, user/mount admin,
    # perl): purged with dpkg so /var/lib/dpkg/status stays truthful for
    # image scanners. --force-*: several are Essential/required.
    # shellcheck disable=SC2086
    chroot "$dir" dpkg --purge --force-remove-essential --force-depends \
        $REMOVE_PACKAGES >"$CACHE/dpkg-purge.log" 2>&1 \
        || die "dpkg --purge failed (log: $CACHE/dpkg-purge.log)"
    rm -rf "$dir"/var/lib/apt "$dir"/var/cache/apt "$dir"/etc/apt \
        "$dir"/var/cache/debconf "$dir"/var/lib/dpkg/*-old
    # Docs, man pages, locales, glibc iconv modules (python has its own
    # codecs), logs, debootstrap leftovers.
    rm -rf "$dir"/usr/share/doc "$dir"/usr/share/man "$dir"/usr/share/info \
        "$dir"/usr/share/locale "$dir"/usr/share/i18n "$dir"/usr/share/lintian \
        "$dir"/usr/share/common-licenses "$dir"/usr/share/bash-completion \
        "$dir"/usr/lib/*-linux-gnu/gconv \
        "$dir"/var/log/* "$dir"/var/cache/ldconfig/* "$dir"/debootstrap
    # Host-specific files debootstrap copied in (docker bind-mounts its own
    # /etc/hostname, /etc/hosts, /etc/resolv.conf at run time anyway).
    : >"$dir"/etc/resolv.conf
    echo sandbox >"$dir"/etc/hostname
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$dir"/etc/hosts
    : >"$dir"/etc/machine-id
    # Device nodes / mount points: docker provides /dev, /proc, /sys, /run.
    rm -rf "${dir:?}"/dev/* "${dir:?}"/proc/* "${dir:?}"/sys/* "${dir:?}"/run/*
    # No setuid/setgid binaries (no-new-privileges neuters them anyway).
    find "$dir" -xdev -type f -perm /6000 -exec chmod a-s {} +
    # The unprivileged user: dedicated uid/gid, no home, no shell, no password.
    grep -q "^sandbox:" "$dir"/etc/group ||
        echo "sandbox:x:$SANDBOX_GID:" >>"$dir"/etc/group
    grep -q "^sandbox:" "$dir"/etc/passwd ||
        echo "sandbox:x:$SANDBOX_UID:$SANDBOX_GID:orchestrators sandbox:/tmp:/bin/false" >>"$dir"/etc/passwd
    [[ ! -e "$dir"/etc/shadow ]] || grep -q "^sandbox:" "$dir"/etc/shadow ||
        echo "sandbox:!:19000:0:99999:7:::" >>"$dir"/etc/shadow
    [[ ! -e "$dir"/etc/gshadow ]] || grep -q "^sandbox:" "$dir"/etc/gshadow ||
        echo "sandbox:!::" >>"$dir"/etc/gshadow
    mkdir -p "$dir"/tmp "$dir"/var/tmp
    chmod 1777 "$dir"/tmp "$dir"/var/tmp
    rm -rf "$dir"/tmp/* "$dir"/var/tmp/* "$dir"/root/.[!.]* 2>/dev/null || true

    # Sanity: the interpreter still works in the slimmed tree.
    chroot "$dir" /usr/bin/python3 -I -S -c 'import sys, os, re, math, json, decimal, asyncio; print(sys.version.split()[0])' >/dev/null \
        || die "python3 broken in slimmed rootfs $dir"

    log "packing the root filesystem into $TARBALL"
    tar --numeric-owner --xattrs -C "$dir" -cf "$TARBALL.tmp" .
    mv -f "$TARBALL.tmp" "$TARBALL"
    rm -rf "$dir"
    trap - EXIT
    log "rootfs cached: $TARBALL ($(du -h "$TARBALL" | cut -f1)) in $((SECONDS - t0))s"
}

[[ -s "$TARBALL" ]] || build_rootfs_tarball
[[ -s "$TARBALL" ]] || die "no rootfs tarball at $TARBALL"

log "docker import $TARBALL -> $IMAGE"
docker import \
    --change "USER $SANDBOX_UID:$SANDBOX_GID" \
    --change 'WORKDIR /tmp' \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL org.orchestrators.sandbox.recipe=$RECIPE_VERSION" \
    --change 'CMD ["python3", "-I", "-S"]' \
    --message "orchestrators sandbox recipe v$RECIPE_VERSION ($SUITE minbase + $PACKAGES, debootstrap)" \
    - "$IMAGE" <"$TARBALL" >/dev/null
smoke_test
drop_old_image
report
