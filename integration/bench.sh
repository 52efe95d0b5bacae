#!/usr/bin/env bash
# Runs pinip's benchmarks on the real test bed with release builds (root needed).
#   integration/bench.sh              # admission: webhook enabled vs disabled, 1000 pods each
# The CNI plugin's ADD latency benchmark: cargo bench -p pinip-cni --bench add_latency
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
exec cargo bench -p pinip-integration --bench admission "$@"
