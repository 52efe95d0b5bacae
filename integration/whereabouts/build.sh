#!/usr/bin/env bash
# Builds whereabouts, the IPAM the benchmarks compare pinip with, from the Go module proxy at
# the version pinned in go.mod here (its own module, so the control plane's pins in k8s/ do
# not move), into a cache outside the clone keyed by that pin and the Go toolchain, and
# prints the directory holding bin/whereabouts and crds/ (its CRDs, from the module's Helm
# chart). A cached build is reused; a changed pin gives a new key. Progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${PINIP_CACHE:-$HOME/.cache/pinip}
key=$( (cat "$here/go.mod" "$here/go.sum" "$0"; go version) | sha256sum | cut -c1-16)
out="$cache_root/whereabouts-$key"
if [ -x "$out/bin/whereabouts" ] && [ -s "$out/crds/whereabouts.cni.cncf.io_ippools.yaml" ]; then
  echo "$out"; exit 0
fi
module=github.com/k8snetworkplumbingwg/whereabouts
version=$(awk -v m="$module" '$1==m{print $2}' "$here/go.mod")
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp/bin" "$tmp/crds"
trap 'rm -rf "$tmp"' EXIT
cd "$here"
echo ">> building whereabouts $version into $out" >&2
start=$(date +%s)
go build -trimpath -ldflags "-s -w" -o "$tmp/bin/whereabouts" "$module/cmd"
dir=$(go list -m -f '{{.Dir}}' "$module")
cp "$dir"/deployment/whereabouts-chart/crds/*.yaml "$tmp/crds/"
chmod -R u+w "$tmp"
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
echo ">> whereabouts built in $(( $(date +%s) - start ))s" >&2
echo "$out"
