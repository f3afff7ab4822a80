#!/usr/bin/env bash
# `make fleet`: the API as deployed, on INFEREX_ADDR (default 127.0.0.1:8080): the real function binaries
# behind a Lambda runtime API, frozen between invocations, on DynamoDB Local and moto (see docs/architecture.md,
# "The deployed shape, locally").
#
# The functions are built for this machine in release (INFEREX_FLEET_PROFILE=dev for a debug build), unless
# INFEREX_FLEET_BIN_DIR names binaries already built. The emulators and the fleet run in a private network
# (scripts/with-emulators.sh); the fleet's own `bridge` carries INFEREX_ADDR into it over a Unix socket.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
FUNCTIONS=(signup auth kyc wallet razorpay-webhook jobs keys inference usage privacy mailer admin)
PROFILE="${INFEREX_FLEET_PROFILE:-release}"
case "$PROFILE" in
  release) TARGET_DIR=release ;;
  dev) TARGET_DIR=debug ;;
  *) echo "error: INFEREX_FLEET_PROFILE is release or dev" >&2; exit 1 ;;
esac

scripts/ensure-tools.sh >/dev/null
if [ -z "${INFEREX_FLEET_BIN_DIR:-}" ]; then
  # Only the functions are selected, so they build exactly as `make build` ships them (no embedded store).
  cargo build --locked --profile "$PROFILE" $(printf -- '-p %s ' "${FUNCTIONS[@]}") --bins
  export INFEREX_FLEET_BIN_DIR="$ROOT/target/$TARGET_DIR"
fi
cargo build --locked --profile "$PROFILE" -p dev-server --bin fleet
FLEET="$ROOT/target/$TARGET_DIR/fleet"
ADDR="${INFEREX_ADDR:-127.0.0.1:8080}"
export INFEREX_ADDR="$ADDR"

if unshare --net true 2>/dev/null || unshare --user --map-root-user --net true 2>/dev/null; then
  RUN_DIR="$(mktemp -d -t inferex-fleet.XXXXXX)"
  export INFEREX_FLEET_SOCKET="$RUN_DIR/fleet.sock"
  "$FLEET" bridge "$ADDR" "$INFEREX_FLEET_SOCKET" &
  BRIDGE=$!
  trap 'kill "$BRIDGE" 2>/dev/null || true; wait "$BRIDGE" 2>/dev/null || true; rm -rf "$RUN_DIR"' EXIT
fi
scripts/with-emulators.sh "$FLEET"
