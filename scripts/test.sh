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

step "build tests"
cargo test --workspace --locked --no-run

step "tests: unit, storage contract and end-to-end, on the embedded store and DynamoDB Local"
log="$(mktemp -t inferex-tests.XXXXXX.log)"
trap 'rm -f "$log"' EXIT
set +e
scripts/with-emulators.sh cargo test --workspace --locked --offline 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary, the last often a doc-test run of 0).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
