#!/usr/bin/env bash
# Builds Plinth and the benchmark harness in release mode and runs one
# benchmark: `core` (bench-core, the default) or `dapr` (bench-dapr). Further
# arguments go to the benchmark, e.g.
#   bench/run.sh --quick                       # bench-core, smoke run
#   bench/run.sh --runs 5 --scenarios say-hello
#   bench/run.sh dapr --quick                  # bench-dapr, smoke run
#   bench/run.sh dapr                          # bench-dapr, full run
# Cargo's usual variables apply (CARGO_TARGET_DIR, CARGO_BUILD_JOBS).
# See bench/README.md.
set -euo pipefail

workspace="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$workspace"

bench=core
case "${1:-}" in
  core | dapr)
    bench="$1"
    shift
    ;;
esac

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
  /*) ;;
  *) target_dir="$workspace/$target_dir" ;;
esac

cargo build --release -p plinth -p plinth-bench

exec "$target_dir/release/bench-$bench" \
  --plinth-bin "$target_dir/release/plinth" \
  --bare-bin "$target_dir/release/bare-server" \
  "$@"
