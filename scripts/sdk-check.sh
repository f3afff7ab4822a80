#!/usr/bin/env bash
# Starts the local server (the `make run` binary, embedded store, Razorpay and model stand-ins) on a free
# loopback port with a throwaway data folder, runs the official openai SDK against it, and stops it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.tools/venv/bin/python"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
DATA="$(mktemp -d -t inferex-sdk.XXXXXX)"
LOG="$DATA/server.log"
INFEREX_ADDR="127.0.0.1:$PORT" INFEREX_DATA_DIR="$DATA/data" "$ROOT/target/debug/dev-server" >"$LOG" 2>&1 &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  kill -0 "$PID" 2>/dev/null || { echo "error: the local server exited:" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
"$PY" "$ROOT/tests/sdk/openai_sdk_check.py" "http://127.0.0.1:$PORT" || { echo "server log:" >&2; tail -50 "$LOG" >&2; exit 1; }
