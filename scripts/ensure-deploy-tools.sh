#!/usr/bin/env bash
# Installs what building and deploying the Lambda functions needs, and nothing else (no test tools, no
# system packages, no sudo: it runs on Linux and macOS alike), once, under .tools/ (ignored by git):
#   - cargo-lambda and the zig linker it cross-compiles arm64 with, pinned (newer zig releases have broken
#     arm64 builds of ring and aws-lc-sys before), in the project's tool virtualenv;
#   - Rust's aarch64-unknown-linux-gnu standard library;
#   - with `sam` as argument (make deploy), the AWS SAM CLI, in a virtualenv of its own (its AWS SDK pins
#     must not meet moto's).
# With `smoke` as argument (make smoke), only the official openai SDK, in a virtualenv of its own.
# Idempotent: a second run only checks the versions.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS"
CARGO_LAMBDA_VERSION=1.9.2
ZIGLANG_VERSION=0.17.1
SAM_CLI_VERSION=1.170.0
OPENAI_VERSION=2.8.1

installed() { "$1/bin/python" -c "import importlib.metadata as m; print(m.version('$2'))" 2>/dev/null || true; }

if [ "${1:-}" = smoke ]; then
  SMOKE="$TOOLS/smoke"
  if [ "$(installed "$SMOKE" openai)" != "$OPENAI_VERSION" ]; then
    echo "==> installing the openai SDK $OPENAI_VERSION into $SMOKE"
    [ -x "$SMOKE/bin/pip" ] || python3 -m venv "$SMOKE"
    "$SMOKE/bin/pip" install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION"
  fi
  exit 0
fi

VENV="$TOOLS/venv"
[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
if [ "$(installed "$VENV" cargo-lambda)" != "$CARGO_LAMBDA_VERSION" ] || [ "$(installed "$VENV" ziglang)" != "$ZIGLANG_VERSION" ]; then
  echo "==> installing cargo-lambda $CARGO_LAMBDA_VERSION and ziglang $ZIGLANG_VERSION into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "cargo-lambda==$CARGO_LAMBDA_VERSION" "ziglang==$ZIGLANG_VERSION"
fi

SAM="$TOOLS/sam"
if [ "${1:-}" = sam ] && [ "$(installed "$SAM" aws-sam-cli)" != "$SAM_CLI_VERSION" ]; then
  echo "==> installing the AWS SAM CLI $SAM_CLI_VERSION into $SAM"
  [ -x "$SAM/bin/pip" ] || python3 -m venv "$SAM"
  "$SAM/bin/pip" install --quiet --disable-pip-version-check "aws-sam-cli==$SAM_CLI_VERSION"
fi

if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  for attempt in 1 2 3; do
    rustup target add aarch64-unknown-linux-gnu && break
    [ "$attempt" -lt 3 ] || exit 1
    sleep 10
  done
fi
