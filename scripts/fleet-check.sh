#!/usr/bin/env bash
# `make fleet` as a client sees it: starts the fleet exactly as `make fleet` does (scripts/fleet.sh, its
# bridge, the emulators, the function binaries built on their own) on a free loopback port with a throwaway
# data folder, runs the official openai SDK check and the post-deploy smoke check against it (signup, the
# e-mail from SES through the table's stream, KYC, a paid top-up through the webhook function, keys,
# streamed and whole answers), and stops it.
#
# Uses the binaries `make test` built (the fleet in debug, the functions in target/fleet-bin).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.tools/venv/bin/python"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
DATA="$(mktemp -d -t inferex-fleet-check.XXXXXX)"
LOG="$DATA/fleet.log"
# Its own session, so that stopping it reaches the bridge, the emulators and every instance.
INFEREX_FLEET_PROFILE=dev INFEREX_FLEET_BIN_DIR="$ROOT/target/fleet-bin" INFEREX_ADDR="127.0.0.1:$PORT" \
  INFEREX_DATA_DIR="$DATA/data" setsid "$ROOT/scripts/fleet.sh" >"$LOG" 2>&1 &
PID=$!
cleanup() {
  kill -TERM -- "-$PID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 1 1200); do
  if curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then break; fi
  kill -0 "$PID" 2>/dev/null || { echo "error: make fleet exited:" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
"$PY" "$ROOT/tests/sdk/openai_sdk_check.py" "http://127.0.0.1:$PORT" || { echo "fleet log:" >&2; tail -50 "$LOG" >&2; exit 1; }
