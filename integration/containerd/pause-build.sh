#!/usr/bin/env bash
# Builds the test bed's sandbox image (a static pause binary in a one-layer OCI archive, since
# no image registry is reachable) into a cache outside the clone keyed by its sources and the C
# compiler, and prints the archive's path. A cached archive is reused; changed sources give a
# new key, so a stale image is never used.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${PINIP_CACHE:-$HOME/.cache/pinip}
key=$( (cat "$here/pause.c" "$here/mkimg.py"; gcc --version | head -1) | sha256sum | cut -c1-16)
out="$cache_root/pause-$key"
if [ -s "$out/pause-oci.tar" ]; then echo "$out/pause-oci.tar"; exit 0; fi
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -static -s "$here/pause.c" -o "$tmp/pause"
python3 "$here/mkimg.py" "$tmp/pause" "$tmp/pause-oci.tar"
rm -rf "$out"; mv "$tmp" "$out"
echo ">> built the sandbox image into $out" >&2
echo "$out/pause-oci.tar"
