#!/usr/bin/env bash
# Runs pinip's benchmarks on the real test bed with release builds (root needed).
#   integration/bench.sh              # admission: webhook enabled vs disabled, 1000 pods each
#   integration/bench.sh add          # CNI ADD alone, no cluster: pinip (dynamic and static builds) vs
#                                     #   host-local vs a static no-op exec (cni-plugin/benches/add_latency.rs)
#   integration/bench.sh cni          # CNI ADD: pinip (runtime annotations / API read) vs host-local vs
#                                     #   whereabouts (built by whereabouts/build.sh), serial and 32 in flight
#   integration/bench.sh cri          # RunPodSandbox to real containerd: bridge+pinip vs bridge+host-local
#   integration/bench.sh rollout      # Deployments of 1000 and 100 × 10 until Running: host-local vs
#                                     #   whereabouts vs pinip on one bed (PINIP_BENCH_RUNS=3, PINIP_ROLLOUT_PODS=1000)
#   integration/bench.sh scale        # 50 000 claims: webhook/binder memory, decision time, binder settle
#                                     #   (PINIP_SCALE_CLAIMS=N for another count)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p pinip-webhook -p pinip-binder -p pinip-cni --bins
case "${1:-admission}" in
  add)
    PINIP_STATIC_PINIP=$(cni-plugin/build-static.sh)
    export PINIP_STATIC_PINIP
    exec cargo bench -p pinip-cni --bench add_latency ;;
  admission) exec cargo bench -p pinip-integration --bench admission ;;
  cni) exec cargo bench -p pinip-integration --bench cni_add ;;
  cri) exec cargo bench -p pinip-integration --bench cri_sandbox ;;
  scale) exec cargo bench -p pinip-integration --bench scale ;;
  rollout) exec cargo bench -p pinip-integration --bench rollout ;;
  *) echo "usage: $0 [admission|add|cni|cri|scale|rollout]" >&2; exit 2 ;;
esac
