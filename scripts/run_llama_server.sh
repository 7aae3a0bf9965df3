#!/usr/bin/env bash
# Run llama-server in the foreground with settings suited to e2e tests on a
# small (2-core) machine.
#
# Usage: scripts/run_llama_server.sh MODEL_PATH PORT [extra llama-server args...]
#
#   MODEL_PATH  a .gguf file (e.g. the output of scripts/find_test_model.py)
#   PORT        TCP port on 127.0.0.1
#
# The server is llama.cpp's, from the prebuilt xllamacpp wheel (scripts/llama_server.py, run by
# $LLAMA_SERVER_PYTHON, default .venv/bin/python), or the binary $LLAMA_SERVER names if set
# (for example one built by scripts/build_llama_server.sh).
# Readiness: poll GET http://127.0.0.1:PORT/health until it returns 200 (~1-3 s for the
# SmolLM2-135M test model).
# Tool calling: the model's own template ignores `tools`; pass a tool-aware ChatML template with
#   --chat-template-file FILE (e.g. llama.cpp's models/templates/Qwen-Qwen2.5-7B-Instruct.jinja;
# the 135M model still calls tools only rarely).
# The model id in the API is "test-model" (override with LLAMA_ALIAS).
# Env: LLAMA_THREADS (default 2), LLAMA_PARALLEL (default 2),
#      LLAMA_CTX_SIZE (default 4096 = total KV, i.e. 2048 per slot with 2 slots).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 MODEL_PATH PORT [extra llama-server args...]" >&2
  exit 2
fi
MODEL="$1"
PORT="$2"
shift 2

[[ -f "$MODEL" ]] || { echo "model not found: $MODEL" >&2; exit 1; }

if [[ -n "${LLAMA_SERVER:-}" ]]; then
  server=("$LLAMA_SERVER")
else
  root="$(cd "$(dirname "$0")/.." && pwd)"
  python="${LLAMA_SERVER_PYTHON:-$root/.venv/bin/python}"
  [[ -x "$python" ]] || python=python3
  server=("$python" "$root/scripts/llama_server.py")
fi

exec "${server[@]}" \
  --host 127.0.0.1 \
  --port "$PORT" \
  -m "$MODEL" \
  --alias "${LLAMA_ALIAS:-test-model}" \
  --ctx-size "${LLAMA_CTX_SIZE:-4096}" \
  --threads "${LLAMA_THREADS:-2}" \
  --threads-http 4 \
  --parallel "${LLAMA_PARALLEL:-2}" \
  --jinja \
  --no-webui \
  --log-colors off \
  "$@"
