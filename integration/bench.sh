#!/usr/bin/env bash
# Runs pinip's benchmarks on the real test bed with release builds (root needed).
#   integration/bench.sh              # admission: webhook enabled vs disabled, 1000 pods each
# The CNI plugin's ADD latency benchmark: cargo bench -p pinip-cni --bench add_latency
set -euo pipefail
cd "$(dirname "$0")/.."
# The admission benchmark runs the webhook (and checks the CNI plugin is there).
cargo build --release -p pinip-webhook -p pinip-cni --bins
exec cargo bench -p pinip-integration --bench admission "$@"
