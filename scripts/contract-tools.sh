#!/usr/bin/env bash
# Installs the API contract test's tools from PyPI into a virtual environment
# (default: target/contract-tools; GEORGE_CONTRACT_TOOLS names another):
# Schemathesis, the property-based API fuzzer, and openapi-python-client,
# which generates a client from the OpenAPI document. Pinned versions; a
# second run with the same versions does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEMATHESIS=4.32.5
CLIENT_GENERATOR=0.29.1
dir=${GEORGE_CONTRACT_TOOLS:-${CARGO_TARGET_DIR:-target}/contract-tools}
stamp="$dir/.versions"
want="schemathesis==$SCHEMATHESIS openapi-python-client==$CLIENT_GENERATOR"
if [ -x "$dir/bin/st" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
python3 -m venv "$dir"
# shellcheck disable=SC2086
"$dir/bin/pip" install --quiet --disable-pip-version-check $want
echo "$want" > "$stamp"
"$dir/bin/st" --version
