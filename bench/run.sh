#!/usr/bin/env bash
# Builds Plinth and the benchmark harness in release mode and runs one
# benchmark: `core` (bench-core, the default), `dapr` (bench-dapr), `mesh`
# (bench-mesh), `stores` (bench-stores), `pubsub` (bench-pubsub) or `functions`
# (bench-functions). Further
# arguments go to the benchmark, e.g.
#   bench/run.sh --quick                       # bench-core, smoke run
#   bench/run.sh --runs 5 --scenarios say-hello
#   bench/run.sh dapr --quick                  # bench-dapr, smoke run
#   bench/run.sh dapr                          # bench-dapr, full run
#   bench/run.sh dapr --no-haproxy             # bench-dapr without haproxy
#   bench/run.sh mesh --quick                  # bench-mesh, smoke run
#   bench/run.sh mesh                          # bench-mesh, full run
#   bench/run.sh stores --quick                # bench-stores, smoke run
#   bench/run.sh stores                        # bench-stores, full run
#   bench/run.sh pubsub --quick                # bench-pubsub, smoke run
#   bench/run.sh functions --quick             # bench-functions, smoke run
#   bench/run.sh functions                     # bench-functions, full run
# bench-dapr and bench-mesh compare with haproxy too: `dapr` and `mesh` install
# Debian's haproxy package when it is missing (as root; otherwise they say so
# and stop), unless --no-haproxy is given. bench-stores needs Redis and
# PostgreSQL running (it says so and stops when they do not answer).
# bench-functions installs the guest functions scripts/build-functions.sh builds
# (first, with `functions`): fixture-hello above all.
# Cargo's usual variables apply (CARGO_TARGET_DIR, CARGO_BUILD_JOBS).
# See bench/README.md.
set -euo pipefail

workspace="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$workspace"

bench=core
case "${1:-}" in
  core | dapr | mesh | stores | pubsub | functions)
    bench="$1"
    shift
    ;;
esac

# haproxy, bench-dapr's second baseline for Invoke HTTP and bench-mesh's
# two-hop baseline, from Debian's package: nothing installed by hand is there
# on a fresh machine.
ensure_haproxy() {
  if command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; then
    return
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: haproxy is not installed; bench-$bench uses it as a baseline." >&2
    echo "run.sh: install Debian's package as root (apt-get install haproxy), or pass --no-haproxy." >&2
    exit 1
  fi
  echo "run.sh: installing haproxy (Debian package)" >&2
  # stdout carries the report: apt's chatter goes to stderr.
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y haproxy >&2; then
    apt-get update >&2
    apt-get install -y haproxy >&2
  fi
}

if [ "$bench" = dapr ] || [ "$bench" = mesh ]; then
  want_haproxy=1
  for arg in "$@"; do
    if [ "$arg" = --no-haproxy ]; then
      want_haproxy=0
    fi
  done
  if [ "$want_haproxy" = 1 ]; then
    ensure_haproxy
  fi
fi

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
  /*) ;;
  *) target_dir="$workspace/$target_dir" ;;
esac

cargo build --release -p plinth -p plinth-bench

if [ "$bench" = functions ]; then
  # The guest binaries (fixture-hello), into $CARGO_TARGET_DIR/tmp/plinth-functions, where
  # bench-functions looks for them. stdout carries the report: the script's goes to stderr.
  CARGO_TARGET_DIR="$target_dir" scripts/build-functions.sh >&2
  set -- --fixture "$target_dir/tmp/plinth-functions/fixture-hello.wasm" "$@"
fi

exec "$target_dir/release/bench-$bench" \
  --plinth-bin "$target_dir/release/plinth" \
  --bare-bin "$target_dir/release/bare-server" \
  "$@"
