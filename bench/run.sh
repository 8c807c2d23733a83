#!/usr/bin/env bash
# Builds Plinth and the benchmark harness in release mode and runs the
# Plinth core benchmark. Extra arguments go to bench-core, e.g.
#   bench/run.sh --quick
#   bench/run.sh --runs 5 --scenarios say-hello
# See bench/README.md.
set -euo pipefail

workspace="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$workspace"

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
  /*) ;;
  *) target_dir="$workspace/$target_dir" ;;
esac

cargo build --release -p plinth -p plinth-bench

exec "$target_dir/release/bench-core" \
  --plinth-bin "$target_dir/release/plinth" \
  --bare-bin "$target_dir/release/bare-server" \
  "$@"
