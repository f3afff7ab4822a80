#!/usr/bin/env bash
# Runs a command with the emulators its tests need started for it (AWS's DynamoDB Local, and moto's server
# for KMS and S3), then stops them.
#
# DynamoDB Local has no option to bind to loopback only, so the emulators and the command run together in a
# private network namespace whose only interface is loopback: nothing outside it can reach them, and any port
# is free. Root gets one with `unshare --net`; an ordinary user with `unshare --user --map-root-user --net`
# where the kernel allows unprivileged user namespaces. Where neither works, the emulators start anyway on
# free loopback ports (DynamoDB Local then also listens on the machine's other interfaces while the tests
# run, which a one-line warning says) and every test still runs.
#
# Usage: scripts/with-emulators.sh COMMAND [ARGS...]
# The command sees INFEREX_TEST_DYNAMODB_ENDPOINT and INFEREX_TEST_MOTO_ENDPOINT (http://127.0.0.1:PORT).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.tools/venv/bin/python"

if [ -z "${INFEREX_EMULATOR_NETWORK:-}" ]; then
  if unshare --net true 2>/dev/null; then
    exec unshare --net env INFEREX_EMULATOR_NETWORK=private "$0" "$@"
  elif unshare --user --map-root-user --net true 2>/dev/null; then
    exec unshare --user --map-root-user --net env INFEREX_EMULATOR_NETWORK=private "$0" "$@"
  fi
  echo "warning: no private network namespace (unshare --net or --user --net) could be made here; the emulators run on this machine's network, and DynamoDB Local listens on every interface until the tests end" >&2
  export INFEREX_EMULATOR_NETWORK=shared
fi

DDB_DIR="$ROOT/.tools/dynamodb-local"
[ -f "$DDB_DIR/DynamoDBLocal.jar" ] || { echo "error: DynamoDB Local missing; run scripts/ensure-tools.sh" >&2; exit 1; }
[ -x "$PY" ] || { echo "error: the tools' Python is missing; run scripts/ensure-tools.sh" >&2; exit 1; }

if [ "$INFEREX_EMULATOR_NETWORK" = private ]; then
  ip link set lo up
  DDB_PORT=8000
  MOTO_PORT=5000
else
  # Ports the machine is not using now (a developer's other services keep theirs).
  read -r DDB_PORT MOTO_PORT < <("$PY" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()')
fi

LOGS="$(mktemp -d -t inferex-emulators.XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$LOGS"
}
trap cleanup EXIT

java -Djava.library.path="$DDB_DIR/DynamoDBLocal_lib" -jar "$DDB_DIR/DynamoDBLocal.jar" \
  -inMemory -port "$DDB_PORT" >"$LOGS/dynamodb.log" 2>&1 &
PIDS+=($!)
"$ROOT/.tools/venv/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGS/moto.log" 2>&1 &
PIDS+=($!)

wait_for() { # name port log pid
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    if ! kill -0 "$4" 2>/dev/null; then echo "error: $1 exited:" >&2; cat "$3" >&2; exit 1; fi
    sleep 0.2
  done
  echo "error: $1 did not start" >&2; cat "$3" >&2; exit 1
}
wait_for "DynamoDB Local" "$DDB_PORT" "$LOGS/dynamodb.log" "${PIDS[0]}"
wait_for "moto" "$MOTO_PORT" "$LOGS/moto.log" "${PIDS[1]}"

export INFEREX_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$DDB_PORT"
export INFEREX_TEST_MOTO_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
"$@"
