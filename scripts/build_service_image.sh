#!/usr/bin/env bash
# `make docker`: build the service image offline (no container registry needed).
#
# The base is the Debian bookworm + python3 root filesystem the sandbox image is made from
# (scripts/build_sandbox_image.sh caches it), imported as orchestrators-base:<recipe>; the Python
# dependencies are downloaded on the host as wheels for CPython 3.11 / manylinux and installed
# from them inside the build, so the build itself needs no network.
#
#   scripts/build_service_image.sh [IMAGE]     # default orchestrators:dev
#   BASE=python:3.11-slim scripts/build_service_image.sh   # when a registry is reachable
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${1:-orchestrators:dev}"
CACHE_ROOT="${ORCH_CACHE_DIR:-$HOME/.cache/orchestrators}"
log() { echo "build_service_image: $*" >&2; }

scripts/ensure_docker.sh >&2
if [[ -z "${BASE:-}" ]]; then
    scripts/build_sandbox_image.sh >&2  # makes sure the cached rootfs exists
    tarball="$(ls "$CACHE_ROOT"/sandbox/rootfs-v*-"$(dpkg --print-architecture)".tar | sort -V | tail -n1)"
    recipe="$(basename "$tarball" | sed -E 's/^rootfs-v([0-9]+)-.*/\1/')"
    BASE="orchestrators-base:$recipe"
    if ! docker image inspect "$BASE" >/dev/null 2>&1; then
        log "importing $tarball as $BASE"
        docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' --change 'ENV LANG=C.UTF-8' \
            - "$BASE" <"$tarball" >/dev/null
    fi
fi

log "downloading wheels for CPython 3.11 (manylinux x86_64) into build/wheels"
python3 -m pip download -q --disable-pip-version-check -r requirements.lock --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --python-version 3.11.2 --implementation cp --abi cp311 -d build/wheels
# pip evaluates environment markers against the Python running it, not the image's: fetch the
# marker-conditional pins (needed on the image's 3.11.2) explicitly, and pip itself.
# shellcheck disable=SC2046
python3 -m pip download -q --disable-pip-version-check --no-deps -d build/wheels pip \
    $(grep ';' requirements.lock | sed -E 's/ *;.*//')

log "docker build $IMAGE FROM $BASE"
# The legacy builder: Debian's docker.io ships without buildx.
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$BASE" -t "$IMAGE" . >&2
log "smoke test: python -m app starts and answers /health"
cid="$(docker run -d --rm -e ORCH_BEARER_TOKEN=smoke-test-token-0123456789 "$IMAGE")"
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 50); do
    if docker exec "$cid" python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8088/health').read().decode())" 2>/dev/null; then
        echo "$IMAGE $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1000/1000}')"
        exit 0
    fi
    sleep 0.2
done
docker logs "$cid" >&2
log "ERROR: the image did not answer /health"
exit 1
