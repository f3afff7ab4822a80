#!/usr/bin/env bash
# Starts the local server (the `make run` binary, embedded store, Razorpay and model stand-ins) on a free
# loopback port with a throwaway data folder, runs the official openai SDK against it, then the other clients
# people use (openai-node, the Vercel AI SDK, LangChain, LiteLLM: scripts/ensure-clients.sh installs them),
# checks README.md's compatibility table against what they found, and stops it.
set -euo pipefail
source "$(dirname "$0")/local-server.sh"
"$PY" "$ROOT/tests/sdk/openai_sdk_check.py" "$BASE" || { echo "server log:" >&2; tail -50 "$LOG" >&2; exit 1; }
"$ROOT/scripts/ensure-clients.sh"
KEY="$("$PY" "$ROOT/tests/sdk/local_account.py" "$BASE" clients@example.in CLIPE1231K 100)"
# The node script runs from the packages' folder (ES modules resolve from the importing file); the clients'
# own chatter (LiteLLM looks for price lists and tokenizers online, and is told not to) goes to a log, shown
# when a check fails.
cp "$ROOT/tests/sdk/node_check.mjs" "$ROOT/.tools/clients-node/node_check.mjs"
CLIENTS_LOG="$DATA/clients.log"
{
  node "$ROOT/.tools/clients-node/node_check.mjs" "$BASE" "$KEY" 2>>"$CLIENTS_LOG" || true
  LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LITELLM_LOG=ERROR \
    "$ROOT/.tools/clients-py/bin/python" "$ROOT/tests/sdk/python_clients_check.py" "$BASE" "$KEY" \
    2>>"$CLIENTS_LOG" || true
} | "$PY" "$ROOT/tests/sdk/compatibility.py" "$ROOT/README.md" || { tail -40 "$CLIENTS_LOG" >&2; exit 1; }
