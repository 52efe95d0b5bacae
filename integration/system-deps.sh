#!/usr/bin/env bash
# Installs the Debian packages the test bed and the build need, when missing: the reference
# CNI plugins, iproute2, containerd and runc (the real CNI caller on containerd nodes), and
# protoc (k8s-cri generates its CRI client at build time). Needs root.
set -euo pipefail
need=()
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/macvlan ] && [ -x /usr/lib/cni/loopback ] || need+=(containernetworking-plugins)
command -v ip >/dev/null || need+=(iproute2)
command -v containerd >/dev/null && command -v ctr >/dev/null || need+=(containerd)
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || need+=(runc)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v nsenter >/dev/null || need+=(util-linux)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
  echo ">> installing Debian packages: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
