#!/usr/bin/env bash
# pinip's main job on a local real cluster: builds what it needs (the upstream control plane
# once, pinip's binaries), brings up the test bed, installs pinip as the manifests configure
# it, and shows pods keeping their addresses. Needs root (network namespaces) and Debian's
# containernetworking-plugins. `./demo.sh --keep` leaves the bed running afterwards.
set -euo pipefail
cd "$(dirname "$0")"
if ! [ -x /usr/lib/cni/bridge ]; then
  echo ">> installing Debian's containernetworking-plugins"
  apt-get update -qq && apt-get install -y -qq containernetworking-plugins iproute2
fi
echo ">> building the upstream Kubernetes control plane (cached after the first time)"
integration/k8s-build.sh >/dev/null
echo ">> building pinip"
cargo build --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/debug/demo" "$@"
