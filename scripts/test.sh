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
scripts/with-emulators.sh cargo test --workspace --locked --offline
