#!/usr/bin/env bash
# Run llama-server in the foreground with settings suited to e2e tests on a
# small (2-core) machine.
#
# Usage: scripts/run_llama_server.sh MODEL_PATH PORT [extra llama-server args...]
#
#   MODEL_PATH  a .gguf file (e.g. the output of scripts/find_test_model.py)
#   PORT        TCP port on 127.0.0.1
#
# The binary is taken from $LLAMA_SERVER if set, else built/found by
# scripts/build_llama_server.sh (instant when cached).
# Readiness: poll GET http://127.0.0.1:PORT/health until it returns 200
# (503 {"error":{"message":"Loading model","type":"unavailable_error","code":503}}
# while loading; ~0.3 s for the SmolLM2-135M test model).
# Tool calling: the model's own template ignores `tools`; pass e.g.
#   --chat-template-file "$(dirname "$(scripts/build_llama_server.sh)")/../templates/Qwen-Qwen2.5-7B-Instruct.jinja"
# to get a tool-aware ChatML template (the 135M model still calls tools only rarely).
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

if [[ -z "${LLAMA_SERVER:-}" ]]; then
  LLAMA_SERVER="$("$(dirname "$0")/build_llama_server.sh" | tail -n1)"
fi

exec "$LLAMA_SERVER" \
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
