#!/usr/bin/env bash
# Installs the client libraries `make test` points at the local server, pinned, under .tools/ (never global):
# openai-node, the Vercel AI SDK (with its OpenAI-compatible and OpenAI providers) and zod from npm;
# LangChain's OpenAI integration and LiteLLM (as a client library) from PyPI in their own virtualenv; and
# schemathesis (the conformance check) in another.
# Idempotent: a second run only checks the versions.
set -euo pipefail
cd "$(dirname "$0")/.."
NODE_DIR="$PWD/.tools/clients-node"
NODE_PACKAGES=(openai@7.60.0 ai@7.0.185 @ai-sdk/openai-compatible@3.0.97 @ai-sdk/openai@4.0.126 zod@4.6.7)
PY_VENV="$PWD/.tools/clients-py"
PY_PACKAGES=(langchain-openai==1.8.1 litellm==1.108.7)

installed_node() {
  for package in "${NODE_PACKAGES[@]}"; do
    name="${package%@*}"; version="${package##*@}"
    [ "$(node -p "require('$NODE_DIR/node_modules/$name/package.json').version" 2>/dev/null)" = "$version" ] || return 1
  done
}
if ! installed_node; then
  echo "==> installing ${NODE_PACKAGES[*]} into $NODE_DIR" >&2
  mkdir -p "$NODE_DIR"
  [ -f "$NODE_DIR/package.json" ] || echo '{"private": true, "type": "module"}' > "$NODE_DIR/package.json"
  npm install --silent --prefix "$NODE_DIR" --no-audit --no-fund --save-exact "${NODE_PACKAGES[@]}" >&2
fi

installed_py() {
  for package in "${PY_PACKAGES[@]}"; do
    name="${package%%==*}"; version="${package##*==}"
    [ "$("$PY_VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null)" = "$version" ] || return 1
  done
}
if ! installed_py; then
  echo "==> installing ${PY_PACKAGES[*]} into $PY_VENV" >&2
  [ -x "$PY_VENV/bin/pip" ] || python3 -m venv "$PY_VENV"
  "$PY_VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}" >&2
fi

ST_VENV="$PWD/.tools/schemathesis"
SCHEMATHESIS_VERSION=4.32.5
if [ "$("$ST_VENV/bin/python" -c "import importlib.metadata as m; print(m.version('schemathesis'))" 2>/dev/null)" != "$SCHEMATHESIS_VERSION" ]; then
  echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $ST_VENV" >&2
  [ -x "$ST_VENV/bin/pip" ] || python3 -m venv "$ST_VENV"
  "$ST_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
fi
