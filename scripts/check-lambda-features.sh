#!/usr/bin/env bash
# The Lambda functions are built with exactly the features they ask for: neither `sam build` (each function
# with `--bin` at the workspace root, the default members selected) nor `make build` (`-p`) may enable
# `shared`'s `embedded` (the SQLite store and its bundled C library) or `testing`, or link rusqlite.
set -euo pipefail
cd "$(dirname "$0")/.."

functions=(signup auth kyc wallet razorpay-webhook jobs keys inference usage privacy mailer admin)
failed=0

check() {
    local what="$1"; shift
    local tree
    tree="$(cargo tree --locked -e normal,features --prefix none "$@")"
    if grep -qE '^shared feature "(embedded|testing)"|^(rusqlite|libsqlite3-sys) ' <<<"$tree"; then
        echo "lambda features: $what enables $(grep -oE '^shared feature "(embedded|testing)"|^(rusqlite|libsqlite3-sys)' <<<"$tree" | sort -u | paste -sd, -)" >&2
        failed=1
    fi
}

check "a build at the workspace root (sam build)"
for function in "${functions[@]}"; do
    check "$function (make build)" -p "$function"
done
# The check itself must see what it looks for: dev-server's build does enable `embedded`.
if ! cargo tree --locked -e normal,features --prefix none -p dev-server | grep -q '^shared feature "embedded"'; then
    echo "lambda features: the check found no embedded feature even in dev-server; it is not looking right" >&2
    failed=1
fi
[ "$failed" = 0 ] && echo "lambda features: ${#functions[@]} functions and the root build without embedded or testing"
exit "$failed"
