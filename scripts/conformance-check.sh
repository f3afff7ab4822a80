#!/usr/bin/env bash
# schemathesis over every operation of openapi.yaml against the local server (make run's binary), with a fixed
# seed: first everything but the operations that end a session or an account, with one customer's session and
# API key; then each of those alone, with a fresh account of its own (so ending one session never turns the
# rest into 401s). Fails on any server error or conformance failure; the logs are kept in target/conformance/.
# Ends with `conformance: N passed, N failed`, counting schemathesis runs.
set -euo pipefail
OPERATOR="$(openssl rand -hex 32)" SIGNING_OUT="$(openssl rand -hex 32)"
ROLES='["kyc_reviewer", "payments", "support", "admin"]'
export INFEREX_ADMIN_TOKEN="{\"conformance\": {\"token\": \"$OPERATOR\", \"roles\": $ROLES},
  \"conformance-signout\": {\"token\": \"$SIGNING_OUT\", \"roles\": $ROLES}}"
# schemathesis tries many wrong passwords from this one address, and the script signs accounts in after it.
export INFEREX_LOGIN_CHECKS_PER_ADDRESS=1000000
source "$(dirname "$0")/local-server.sh"
"$ROOT/scripts/ensure-clients.sh"
SESSION_ENDING=(
  "POST /v1/auth/logout"
  "DELETE /v1/auth/sessions"
  "DELETE /v1/auth/sessions/{session_id}"
  "POST /v1/auth/password-reset"
  "POST /v1/auth/password-reset/confirm"
  "POST /v1/account/password"
  "DELETE /v1/account"
  "DELETE /v1/admin/sessions"
  "POST /v1/admin/accounts/{user_id}/revoke-access"
  "POST /v1/admin/revoke-access"
)
OUT="$ROOT/target/conformance"
rm -rf "$OUT" && mkdir -p "$OUT"
export CONFORMANCE_OPERATOR CONFORMANCE_OPERATOR_TOKEN="$OPERATOR" CONFORMANCE_API_KEY CONFORMANCE_SESSION
schemathesis() {
  (cd "$DATA" && "$ROOT/.tools/schemathesis/bin/schemathesis" --config-file "$ROOT/tests/conformance/schemathesis.toml" \
    run "$ROOT/openapi.yaml" --url "$BASE" --seed 20261206 --workers 1 --continue-on-failure "$@")
}
passed=0 failed=0
record() { # record LOG: counts the run and shows its failures
  if [ "$1" = ok ]; then passed=$((passed + 1)); else failed=$((failed + 1)); sed -n '/^=* FAILURES\|^=* ERRORS/,$p' "$2" | head -150; fi
  grep -E '^=+ .* in [0-9.]+s =+$' "$2" | sed "s|^|$(basename "$2" .log): |" || true
}

CONFORMANCE_API_KEY="$("$PY" "$ROOT/tests/sdk/local_account.py" "$BASE" conformance@example.in CONPE1231K 100)"
CONFORMANCE_SESSION="$("$PY" "$ROOT/tests/sdk/local_account.py" "$BASE" conformance-session@example.in)"
# The customer's id, for the operator routes that take one (nothing in the schema hands ids out).
export CONFORMANCE_USER_ID
CONFORMANCE_USER_ID="$("$PY" - "$BASE" <<'PY'
import json, sys, urllib.request
def call(path, body=None, token=None):
    request = urllib.request.Request(sys.argv[1] + path, data=body and json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    if token:
        request.add_header("authorization", "Bearer " + token)
    return json.load(urllib.request.urlopen(request))
token = call("/v1/auth/login", {"email": "conformance@example.in", "password": "correct horse battery"})["token"]
print(call("/v1/account", token=token)["id"])
PY
)"
# Each operator enrols an authenticator and signs in as a person would, before schemathesis tries codes of
# its own (which use up the sign-in attempts): one session for everything, one for signing out.
operator_session() { # operator_session TOKEN: a session, from the token and the authenticator's current code
  "$PY" - "$BASE" "$1" "$ROOT/scripts" <<'PY'
import json, sys, urllib.request
sys.path.insert(0, sys.argv[3])
import totp_code
def call(path, token, body=None):
    request = urllib.request.Request(sys.argv[1] + path, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"content-type": "application/json", "authorization": "Bearer " + token})
    return json.load(urllib.request.urlopen(request))
uri = call("/v1/admin/totp/enrol", sys.argv[2])["otpauth_uri"]
print(call("/v1/admin/sessions", sys.argv[2], {"code": totp_code.code(uri)})["session"])
PY
}
MAIN_OPERATOR_SESSION="$(operator_session "$OPERATOR")"
CONFORMANCE_OPERATOR="$MAIN_OPERATOR_SESSION"
SIGNING_OUT_SESSION="$(operator_session "$SIGNING_OUT")"
excludes=()
for operation in "${SESSION_ENDING[@]}"; do excludes+=(--exclude-name "$operation"); done
if schemathesis "${excludes[@]}" >"$OUT/everything-else.log" 2>&1; then result=ok; else result=failed; fi
record "$result" "$OUT/everything-else.log"

number=0
for operation in "${SESSION_ENDING[@]}"; do
  number=$((number + 1))
  CONFORMANCE_SESSION="$("$PY" "$ROOT/tests/sdk/local_account.py" "$BASE" "ending-$number@example.in")"
  CONFORMANCE_OPERATOR="$MAIN_OPERATOR_SESSION"
  if [ "$operation" = "DELETE /v1/admin/sessions" ]; then CONFORMANCE_OPERATOR="$SIGNING_OUT_SESSION"; fi
  log="$OUT/$(echo "$operation" | tr -c 'a-zA-Z0-9\n' '-').log"
  # Alone, an operation has no links to follow: no stateful phase.
  if schemathesis --include-name "$operation" --phases examples,coverage,fuzzing >"$log" 2>&1; then result=ok; else result=failed; fi
  record "$result" "$log"
done
echo "conformance: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
