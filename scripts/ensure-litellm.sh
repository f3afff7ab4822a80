#!/usr/bin/env bash
# Installs the reference gateway `make bench` compares against: LiteLLM's proxy, from PyPI, pinned, in its own
# virtualenv under .tools/ (its dependencies stay away from the test tools). Prints the path of its command.
# Idempotent: a second run only checks that it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
LITELLM_VERSION=1.108.7
VENV="$PWD/.tools/litellm"
if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null)" != "$LITELLM_VERSION" ]; then
  echo "==> installing litellm[proxy] $LITELLM_VERSION into $VENV" >&2
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION" >&2
fi
echo "$VENV/bin/litellm"
