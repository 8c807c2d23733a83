#!/usr/bin/env bash
# Build the guest workspace (guest/): every crate under guest/components as a WASI 0.2
# component (wasm32-wasip2), every crate under guest/modules as a core module (wasm32-wasip1,
# Layotto's proxy-wasm ABI). The .wasm files are copied, named after their crate, to
# $CARGO_TARGET_DIR/tmp/plinth-functions, where the tests and benchmarks find them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/plinth/target}"
rustup target add wasm32-wasip1 wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip1 wasm32-wasip2
out="$CARGO_TARGET_DIR/tmp/plinth-functions"
mkdir -p "$out"

build() { # target dir
  local target=$1 dir=$2 pkgs=()
  for d in guest/"$dir"/*/; do
    [ -f "$d/Cargo.toml" ] && pkgs+=(-p "$(basename "$d")")
  done
  [ ${#pkgs[@]} -eq 0 ] && return 0
  cargo build --manifest-path guest/Cargo.toml --release --locked --target "$target" "${pkgs[@]}"
  for d in guest/"$dir"/*/; do
    local name; name=$(basename "$d")
    local file="$CARGO_TARGET_DIR/$target/release/${name//-/_}.wasm"
    [ -f "$file" ] || file="$CARGO_TARGET_DIR/$target/release/$name.wasm"
    cp "$file" "$out/$name.wasm"
  done
}
build wasm32-wasip2 components
build wasm32-wasip1 modules
ls -l "$out"
