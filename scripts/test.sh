#!/usr/bin/env bash
# Run Plinth's whole test suite: formatting, lints, unit and integration tests, and the
# README quickstart and the official Dapr Python SDK against a live Plinth. Works on a fresh
# machine of the project's kind; installs what it needs itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds live outside the clone so that reruns on the same machine are fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/plinth/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE=1
# Optional components every step builds with, so that clippy, the quickstart and Python
# builds and the tests share one feature set and nothing is built twice. The etcd
# components need protoc, which scripts/services/etcd.sh installs.
export PLINTH_FEATURES="${PLINTH_FEATURES-plinth-components/etcd}"
features=()
if [ -n "$PLINTH_FEATURES" ]; then features=(--features "$PLINTH_FEATURES"); fi

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# Backends beyond the machine's own services (Redis, PostgreSQL, MariaDB, the brokers): each
# script in scripts/services installs what it needs from Debian or PyPI when it is missing and
# starts its server on a fixed loopback port, doing nothing when it already runs.
shopt -s nullglob
for service in scripts/services/*.sh; do
  step "service: $(basename "$service" .sh)"
  "$service"
done
shopt -u nullglob

step "functions: the guest SDK, examples and fixtures (guest/) to WebAssembly"
scripts/build-functions.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings

step "README quickstart against a live Plinth"
scripts/quickstart-check.sh

# Reuses the binary the quickstart step built.
step "Dapr Python SDK against a live Plinth"
PLINTH_BIN="$CARGO_TARGET_DIR/debug/plinth" scripts/python-tests.sh

# Last, so that its summary closes the output.
step "tests"
cargo nextest run --workspace --locked "${features[@]}" --profile ci
