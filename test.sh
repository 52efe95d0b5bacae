#!/usr/bin/env bash
# Runs every test: unit and property tests of each crate, and the end-to-end tests on the
# real test bed (needs root for network namespaces, Go to build the upstream control plane
# once; installs the Debian packages it needs). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")"
integration/system-deps.sh
# End-to-end tests exec the real binaries (webhook, CNI plugin), so build them first.
cargo build --workspace --bins
# ... and `pinip` as a node runs it (static), which the CNI tests run too.
PINIP_STATIC_PINIP=$(cni-plugin/build-static.sh)
export PINIP_STATIC_PINIP
exec cargo test --workspace "$@"
