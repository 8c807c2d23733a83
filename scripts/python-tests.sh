#!/usr/bin/env bash
# Run the official Dapr Python SDK (tests/python) against a built Plinth. Installs the SDK into
# a cached virtualenv (needs PyPI the first time and whenever the requirements change).
# Builds nothing: PLINTH_BIN names the binary (default: the debug build in $CARGO_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${PLINTH_BIN:-${CARGO_TARGET_DIR:-target}/debug/plinth}"
[[ -x "$bin" ]] || { echo "python-tests: no plinth binary at $bin (build it first)" >&2; exit 1; }
PLINTH_BIN="$(realpath "$bin")"
export PLINTH_BIN

venv="${XDG_CACHE_HOME:-$HOME/.cache}/plinth/venv"
requirements=tests/python/requirements.txt
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
stamp="$venv/.requirements.sha256"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  # Written only after a successful install, so a failed one is retried on the next run.
  rm -f "$stamp"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" >"$stamp"
fi

# Keep the clone clean: no __pycache__ or .pytest_cache next to the tests.
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -p no:cacheprovider tests/python -q
