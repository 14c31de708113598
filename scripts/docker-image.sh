#!/usr/bin/env bash
# Builds the George image (engine and reference agent) WITHOUT pulling
# anything: the root filesystem is assembled from this machine's own tools
# and their shared libraries, plus a george binary built here, and
# `docker build` uses the repository's Dockerfile (FROM scratch).
#
# usage: scripts/docker-image.sh [TAG] [GEORGE_BINARY]
#   TAG            image tag (default george/engine:latest)
#   GEORGE_BINARY  the george executable (default target/release/george)
#
# Where images can be pulled, deploy/Dockerfile.source builds from source instead.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-george/engine:latest}
bin=${2:-$here/target/release/george}
[ -x "$bin" ] || { echo "error: $bin is not an executable; build it first (cargo build --release)" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root"/{bin,usr/bin,usr/local/bin,etc,tmp,work,run,var/lib/george,examples}
chmod 1777 "$root/tmp"

# What the reference agent's shell steps commonly use.
tools="sh bash cat cp mkdir rmdir seq printf tr mv wc test find sort uniq head tail xargs sha256sum md5sum tee
       touch sleep ls rm grep sed awk cut date env id stat chmod ln dirname basename uname true false expr"
for t in $tools; do
  p=$(command -v "$t" 2>/dev/null || true)
  case "$p" in /*) cp -L "$p" "$root/usr/bin/$t" ;; esac
done
cp -L "$(command -v sh)" "$root/bin/sh"
install -m 0755 "$bin" "$root/usr/local/bin/george"

# Their shared libraries and the dynamic loader.
for f in "$root"/usr/bin/* "$root/bin/sh" "$root/usr/local/bin/george"; do
  ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true
done | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
cp -r "$here/examples/quickstart" "$root/examples/quickstart"
cp "$here/deploy/Dockerfile" "$ctx/Dockerfile"

docker build -q -t "$tag" "$ctx" 2>/dev/null >/dev/null || docker build -t "$tag" "$ctx"
echo "$tag"
