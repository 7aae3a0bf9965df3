#!/usr/bin/env bash
# Build llama.cpp's `llama-server` offline from the llama.cpp sources vendored in
# the llama-cpp-python sdist on PyPI, and cache the binary outside the checkout.
#
# Optional: the test suite runs llama.cpp's server from the prebuilt xllamacpp
# wheel (scripts/llama_server.py) and needs no build. Use this for a native
# binary, e.g. LLAMA_SERVER="$(scripts/build_llama_server.sh | tail -n1)" make test.
# It takes 9-16 minutes on 2 cores (521 s and 945 s measured), printing cmake's
# [NN%] lines; a second run waits for the first and says for whom and since when.
#
# Usage: scripts/build_llama_server.sh
#   Prints the absolute path of the llama-server binary as the LAST line of
#   stdout. Progress goes to stderr.
#
# Environment:
#   ORCH_CACHE_DIR   cache root (default: $HOME/.cache/orchestrators)
#   PYTHON           python used for `pip download` (default: python3)
#   JOBS             parallel build jobs (default: nproc)
#   LOCK_REPORT_SEC  while another build holds the lock, report every N s (default: 15)
#
# Cache layout:
#   $ORCH_CACHE_DIR/llama-server-0.3.36/
#       bin/llama-server     self-contained binary (static ggml/llama libs)
#       templates/*.jinja    llama.cpp's models/templates (chat templates; e.g.
#                            Qwen-Qwen2.5-7B-Instruct.jinja gives the ChatML
#                            test model tool-call support via --chat-template-file)
#       BUILD_INFO           version, cmake flags, build time
#       .lock                flock(1) lock file
#       .lock.owner          PID and start time of the build holding the lock
#       build.log            that build's output (a waiting run shows its last step)
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="0.3.36"
CACHE_ROOT="${ORCH_CACHE_DIR:-$HOME/.cache/orchestrators}"
CACHE="$CACHE_ROOT/llama-server-$LLAMA_CPP_PYTHON_VERSION"
BIN="$CACHE/bin/llama-server"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-$(nproc)}"

# CMake flags (see the notes below):
#  - LLAMA_USE_PREBUILT_UI=OFF: no web-UI assets fetched from the model hub at
#    build time; the server is built without the web UI (cmake warns about it).
#  - LLAMA_CURL=OFF: kept for older llama.cpp; deprecated (only a warning) here.
#  - LLAMA_OPENSSL=OFF: no HTTPS client (model download from hubs is impossible
#    offline anyway), and no runtime dependency on libssl.
#  - GGML_NATIVE=OFF: no -march=native; ggml then enables the generic x86-64-v3
#    set (SSE4.2/AVX/AVX2/FMA/F16C/BMI2), so a cached binary also runs on
#    another (AVX2-capable) CPU.
#  - BUILD_SHARED_LIBS=OFF: libllama/libggml linked statically -> one file.
#  - GGML_OPENMP=OFF: ggml's own thread pool instead of libgomp, so the binary
#    needs only libc/libstdc++/libm/libgcc_s.
#  - LLAMA_BUILD_TESTS/EXAMPLES=OFF, GGML_CCACHE=OFF: less to configure, no
#    ccache warning.
CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_CURL=OFF
  -DLLAMA_OPENSSL=OFF
  -DGGML_NATIVE=OFF
  -DBUILD_SHARED_LIBS=OFF
  -DGGML_OPENMP=OFF
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_SERVER=ON
  -DGGML_CCACHE=OFF
)

log() { printf '[build_llama_server] %s\n' "$*" >&2; }

binary_ok() {
  [[ -x "$BIN" && -d "$CACHE/templates" ]] && "$BIN" --version >/dev/null 2>&1
}

# Fast path: warm cache, no lock needed.
if binary_ok; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  # Another build holds the lock: say whose, since when and how far it is, every 15 s.
  while ! flock -w "${LOCK_REPORT_SEC:-15}" 9; do
    read -r owner_pid owner_start < "$CACHE/.lock.owner" 2>/dev/null || true
    step="$(grep -E '^\[ *[0-9]+%\]' "$CACHE/build.log" 2>/dev/null | tail -n 1 | cut -c1-100)" || true
    log "waiting for the lock $CACHE/.lock held by PID ${owner_pid:-?} (a build started" \
      "$(date -d "@${owner_start:-0}" +%H:%M:%S 2>/dev/null || echo '?'), $(($(date +%s) - ${owner_start:-$(date +%s)}))s ago)" \
      "at: ${step:-starting}"
  done
fi
echo "$$ $(date +%s)" > "$CACHE/.lock.owner"
# Someone else may have finished the build while we waited.
if binary_ok; then
  log "built by a concurrent run"
  echo "$BIN"
  exit 0
fi

# Leftovers of a build that was killed (we hold the lock, so none is running).
rm -rf "$CACHE"/tmp.*

for tool in cmake cc c++ make; do
  command -v "$tool" >/dev/null 2>&1 || { log "missing required tool: $tool"; exit 1; }
done

WORK="$(mktemp -d "$CACHE/tmp.XXXXXX")"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

start=$(date +%s)
log "downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist"
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: \
  "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$WORK/dl" >&2
SDIST="$(ls "$WORK"/dl/llama_cpp_python-*.tar.gz "$WORK"/dl/llama-cpp-python-*.tar.gz 2>/dev/null | head -n1 || true)"
[[ -n "$SDIST" ]] || { log "sdist not found in $WORK/dl"; exit 1; }

log "extracting $(basename "$SDIST")"
mkdir -p "$WORK/src"
tar -xzf "$SDIST" -C "$WORK/src" --strip-components=1
SRC="$WORK/src/vendor/llama.cpp"
[[ -f "$SRC/CMakeLists.txt" ]] || { log "no vendored llama.cpp at $SRC"; exit 1; }

log "configuring: cmake ${CMAKE_FLAGS[*]}"
cmake -S "$SRC" -B "$WORK/build" "${CMAKE_FLAGS[@]}" >&2

log "building llama-server with $JOBS jobs (9-16 minutes on 2 cores; cmake prints [NN%])"
# Only the server target; its output also goes to build.log for a run waiting on the lock.
cmake --build "$WORK/build" --config Release --target llama-server -j"$JOBS" 2>&1 | tee "$CACHE/build.log" >&2

BUILT="$WORK/build/bin/llama-server"
[[ -x "$BUILT" ]] || { log "build produced no $BUILT"; exit 1; }
"$BUILT" --version >&2

# Stage the new bin/ inside $WORK (same filesystem as the cache), then rename it
# into place.
STAGE="$WORK/bin"
mkdir -p "$STAGE"
cp "$BUILT" "$STAGE/llama-server"
# Ship any non-system shared libs it might still need (none with the flags above).
while read -r lib; do
  [[ -n "$lib" && -f "$lib" ]] && cp -L "$lib" "$STAGE/"
done < <(ldd "$BUILT" | awk '/=>/ {print $3}' | grep -F "$WORK/" || true)

end=$(date +%s)
{
  echo "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION"
  echo "cmake_flags ${CMAKE_FLAGS[*]}"
  echo "build_seconds $((end - start))"
  echo "built_at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  "$BUILT" --version 2>&1 | sed 's/^/version /'
} > "$WORK/BUILD_INFO"

# Templates and BUILD_INFO first, bin/ last: bin/llama-server appearing is what
# marks the cache as complete. Old copies are moved into $WORK (deleted on exit).
mkdir -p "$WORK/old"
cp -r "$SRC/models/templates" "$WORK/templates"
[[ -e "$CACHE/templates" ]] && mv "$CACHE/templates" "$WORK/old/templates"
mv "$WORK/templates" "$CACHE/templates"
mv "$WORK/BUILD_INFO" "$CACHE/BUILD_INFO"
[[ -e "$CACHE/bin" ]] && mv "$CACHE/bin" "$WORK/old/bin"
mv "$STAGE" "$CACHE/bin"

log "built in $((end - start))s: $BIN"
echo "$BIN"
