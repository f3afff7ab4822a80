#!/usr/bin/env bash
# `make test`: every check the project has, in the order that fails fastest.
# Installs its tools on first use (scripts/ensure-tools.sh) and starts/stops DynamoDB Local itself.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "rustfmt"
cargo fmt --all -- --check

step "clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tools (DynamoDB Local, cfn-lint)"
scripts/ensure-tools.sh

step "cfn-lint template.yaml"
.tools/venv/bin/cfn-lint template.yaml

step "build tests and the local server"
cargo test --workspace --locked --no-run
cargo build -p dev-server --locked

step "tests: unit, storage contract and end-to-end, on the embedded store and DynamoDB Local"
log="$(mktemp -t inferex-tests.XXXXXX.log)"
trap 'rm -f "$log"' EXIT
set +e
scripts/with-emulators.sh cargo test --workspace --locked --offline 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -eq 0 ]; then
  step "the official openai SDK against the local server"
  scripts/sdk-check.sh 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
fi
# One closing line for the whole run (cargo prints one per test binary, the last often a doc-test run of 0).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     /^sdk: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4 }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
