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

step "cfn-lint template.yaml and dr/template.yaml (informational checks too)"
.tools/venv/bin/cfn-lint --include-checks I -- template.yaml dr/template.yaml

step "the Lambda functions build without the embedded store and test support"
scripts/check-lambda-features.sh
# Only the functions are selected, so no dev-server or test crate can switch shared's features on for them.
# These binaries, as `make build` ships them, are the fleet's (`make fleet`, tests/tests/fleet.rs): kept
# aside, since the workspace's test build below links the same names with every feature on.
cargo build --locked --bins $(printf -- '-p %s ' signup auth kyc wallet razorpay-webhook jobs keys inference usage privacy mailer admin)
mkdir -p target/fleet-bin
for binary in signup auth kyc wallet razorpay-webhook jobs keys inference usage privacy mailer admin exports mail-feedback; do
  cp "target/debug/$binary" "target/fleet-bin/$binary.new" && mv "target/fleet-bin/$binary.new" "target/fleet-bin/$binary"
done

step "build tests and the local server"
cargo test --workspace --locked --no-run
cargo build -p dev-server --locked

step "tests: unit, storage contract and end-to-end, on the embedded store and DynamoDB Local"
log="$(mktemp -t inferex-tests.XXXXXX.log)"
trap 'rm -f "$log"' EXIT
# Every check runs even when an earlier one fails (--no-fail-fast: one failing test binary never hides
# another); the run fails if any did.
status=0
set +e
scripts/with-emulators.sh cargo test --workspace --locked --offline --no-fail-fast 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "template.yaml as AWS SAM transforms it: routes, streaming, secrets, retention, limits, alarms"
.tools/venv/bin/python scripts/check-template.py 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "make deploy without AWS: it refuses to run without an alarm address, and keeps the one given"
.tools/venv/bin/python scripts/check-deploy.py 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "the official openai SDK, the post-deploy smoke check and the other clients (openai-node, AI SDK, LangChain, LiteLLM) against the local server"
scripts/sdk-check.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "openapi.yaml against the local server: schemathesis over every operation (a 5xx, an undocumented status or a body unlike the schema fails)"
scripts/conformance-check.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "make fleet: the official openai SDK and the smoke check against the real function binaries"
scripts/fleet-check.sh 2>&1 | sed -u 's/^sdk:/fleet-sdk:/; s/^smoke:/fleet-smoke:/' | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "the README's quick start: make run"
.tools/venv/bin/python scripts/make-run-check.py 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "the dashboard and the operator console in headless Chromium, against make run"
.tools/venv/bin/python scripts/browser-check.py 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
set -e

# One closing line for the whole run (cargo prints one per test binary, the last often a doc-test run of 0).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     /^(sdk|smoke|clients|conformance|fleet-sdk|fleet-smoke|make-run|template|browser|deploy): [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4 }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
