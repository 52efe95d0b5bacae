#!/usr/bin/env bash
# Builds `pinip` (the binary the runtime execs) static and position-dependent for this glibc
# host, the way start-up wants it, and prints its path. The image builds it with musl, which
# is static already; a glibc toolchain needs `crt-static`, and that needs an explicit
# --target so that build scripts and proc-macros (loaded by the compiler) stay dynamic. The
# flags are given for that target only, so `target/release` is untouched and nothing else is
# rebuilt. `pinip-kube` stays dynamic: it resolves host names through glibc's NSS.
#   cni-plugin/build-static.sh            # -> <target dir>/<host triple>/release/pinip
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
  *-linux-gnu) ;;
  *) echo "build-static.sh: $host is not a glibc Linux host; build with its own static target" >&2; exit 2 ;;
esac
flags_var="CARGO_TARGET_$(echo "$host" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
export "$flags_var=-C target-feature=+crt-static -C relocation-model=static"
cargo build -q --release -p pinip-cni --bin pinip --target "$host" >&2
target_dir=$(cargo metadata -q --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
echo "$target_dir/$host/release/pinip"
