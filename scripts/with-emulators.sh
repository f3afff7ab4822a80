#!/usr/bin/env bash
# Runs a command with DynamoDB Local started for it, then stops the emulator.
#
# DynamoDB Local has no option to bind to loopback only, so the emulator and the command run together in a
# private network namespace whose only interface is loopback: nothing outside this machine (or outside the
# namespace) can reach it, and any port is free. Needs `unshare` with permission to create a network
# namespace (root, as on CI).
#
# Usage: scripts/with-emulators.sh COMMAND [ARGS...]
# The command sees INFEREX_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:PORT.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

if [ "${INFEREX_IN_PRIVATE_NETNS:-}" != 1 ]; then
  if ! unshare --net true 2>/dev/null; then
    echo "error: cannot create a private network namespace (unshare --net); run as root" >&2
    exit 1
  fi
  exec unshare --net env INFEREX_IN_PRIVATE_NETNS=1 "$0" "$@"
fi

ip link set lo up

DDB_DIR="$ROOT/.tools/dynamodb-local"
[ -f "$DDB_DIR/DynamoDBLocal.jar" ] || { echo "error: DynamoDB Local missing; run scripts/ensure-tools.sh" >&2; exit 1; }

PORT=8000
LOG="$(mktemp -t dynamodb-local.XXXXXX.log)"
java -Djava.library.path="$DDB_DIR/DynamoDBLocal_lib" -jar "$DDB_DIR/DynamoDBLocal.jar" \
  -inMemory -port "$PORT" >"$LOG" 2>&1 &
DDB_PID=$!
cleanup() { kill "$DDB_PID" 2>/dev/null || true; wait "$DDB_PID" 2>/dev/null || true; rm -f "$LOG"; }
trap cleanup EXIT

for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  if ! kill -0 "$DDB_PID" 2>/dev/null; then echo "error: DynamoDB Local exited:" >&2; cat "$LOG" >&2; exit 1; fi
  sleep 0.2
done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || { echo "error: DynamoDB Local did not start" >&2; cat "$LOG" >&2; exit 1; }

export INFEREX_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$PORT"
"$@"
