#!/usr/bin/env bash
# pinip's main job on a local real cluster: builds what it needs (the upstream control plane
# once, pinip's binaries), brings up the test bed, installs pinip as the manifests configure
# it, and shows pods keeping their addresses. Needs root (network namespaces); installs the
# Debian packages it needs (CNI plugins, containerd, runc); node-1 runs a real containerd.
# `./demo.sh --keep` leaves the bed running afterwards.
set -euo pipefail
cd "$(dirname "$0")"
integration/system-deps.sh
echo ">> building the upstream Kubernetes control plane (cached after the first time)"
integration/k8s-build.sh >/dev/null
echo ">> building pinip"
cargo build --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/debug/demo" "$@"
