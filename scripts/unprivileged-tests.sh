#!/usr/bin/env bash
# Runs the sandbox's attack tests (the process runtime's test binary) as an
# unprivileged user. CI runs the whole suite as root, where each attempt gets
# its own uid; here there is no uid to separate agents, and Landlock alone
# must refuse every attack.
#
# usage: scripts/unprivileged-tests.sh   (as root: runs them as uid 65534)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cargo test --locked -p george-runtime --test process_runtime --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*process_runtime[^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "error: the process runtime's test binary was not built" >&2; exit 1; }
launcher="$(dirname "$(dirname "$bin")")/george-launch"
[ -x "$launcher" ] || { echo "error: the agent launcher (george-launch) was not built" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
  exec "$bin"
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
chmod 0755 "$scratch"
install -m 0755 "$bin" "$scratch/process_runtime"
install -m 0755 "$launcher" "$scratch/george-launch"
mkdir "$scratch/tmp"
chown 65534:65534 "$scratch/tmp"
cd "$scratch/tmp"
setpriv --reuid=65534 --regid=65534 --clear-groups \
  env -i PATH="$PATH" TMPDIR="$scratch/tmp" HOME="$scratch/tmp" GEORGE_TEST_LAUNCHER="$scratch/george-launch" \
  "$scratch/process_runtime"
