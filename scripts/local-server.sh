# Sourced by the client and conformance checks: starts the local server (the `make run` binary, embedded
# store, Razorpay and model stand-ins) on a free loopback port with a throwaway data folder, waits for it,
# and stops it (and removes the folder) when the sourcing script exits. Sets ROOT, PY, PORT, BASE, DATA, LOG.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.tools/venv/bin/python"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
BASE="http://127.0.0.1:$PORT"
DATA="$(mktemp -d -t inferex-local.XXXXXX)"
LOG="$DATA/server.log"
INFEREX_ADDR="127.0.0.1:$PORT" INFEREX_DATA_DIR="$DATA/data" "$ROOT/target/debug/dev-server" >"$LOG" 2>&1 &
SERVER_PID=$!
stop_local_server() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap stop_local_server EXIT
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "error: the local server exited:" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
