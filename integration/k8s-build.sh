#!/usr/bin/env bash
# Builds the upstream control plane the test bed runs (etcd, kube-apiserver, kubectl,
# kube-controller-manager, kube-scheduler) from the Go module proxy at the versions pinned in
# k8s/go.mod, into a cache outside the clone keyed by that pin, and prints the bin directory.
# A cached build is reused; a changed pin or Go toolchain gives a new key, so a stale build is
# never used. Progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")/k8s" && pwd)
cache_root=${PINIP_CACHE:-$HOME/.cache/pinip}
key=$( (cat "$here/go.mod" "$here/go.sum"; go version; echo "ldflags-v1") | sha256sum | cut -c1-16)
out="$cache_root/k8s-$key"
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)
ready=1
for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || ready=0; done
if [ "$ready" = 1 ]; then echo "$out/bin"; exit 0; fi

k8s_version=$(awk '$1=="k8s.io/kubernetes"{print $2}' "$here/go.mod")
minor=$(echo "$k8s_version" | cut -d. -f2)
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp/bin"
trap 'rm -rf "$tmp"' EXIT
echo ">> building ${bins[*]} ($k8s_version) into $out (several minutes on 2 cores)" >&2
ver=k8s.io/component-base/version
cver=k8s.io/client-go/pkg/version
ldflags="-s -w"
for p in $ver $cver; do
  ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
cd "$here"
start=$(date +%s)
go build -v -trimpath -ldflags "$ldflags" -o "$tmp/bin/" \
  go.etcd.io/etcd/server/v3 \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl 2>&1 |
  awk -v s="$start" '{n++; if (n % 100 == 0) {printf ">> compiled %d packages (%ds)\n", n, systime()-s > "/dev/stderr"; fflush("/dev/stderr")}} /^(#|go: |[^ ]+\.go:)/ {print > "/dev/stderr"}'
[ "${PIPESTATUS[0]}" = 0 ] || { echo ">> go build failed" >&2; exit 1; }
# The etcd main package is named after its module directory ("v3" or "server").
for f in v3 server; do [ -x "$tmp/bin/$f" ] && mv "$tmp/bin/$f" "$tmp/bin/etcd"; done
for b in "${bins[@]}"; do [ -x "$tmp/bin/$b" ] || { echo ">> missing $b after build" >&2; exit 1; }; done
rm -rf "$out"; mv "$tmp" "$out"
echo ">> built in $(( $(date +%s) - start ))s" >&2
echo "$out/bin"
