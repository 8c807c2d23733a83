#!/usr/bin/env bash
# An S3-compatible server for file.s3's tests: moto's server mode from PyPI, in a venv under
# ${XDG_CACHE_HOME:-$HOME/.cache}/plinth/moto-venv, on 127.0.0.1:19000 (tests read
# PLINTH_TEST_S3). Idempotent: installs only when missing, starts only when not answering.
set -euo pipefail

PORT=19000
URL="http://127.0.0.1:${PORT}"
BASE="${XDG_CACHE_HOME:-$HOME/.cache}/plinth"
VENV="$BASE/moto-venv"
DATA="$BASE/s3"

answers() {
  # moto answers any request; the bucket listing is the cheapest one.
  curl -fsS -o /dev/null --max-time 2 "$URL/" 2>/dev/null
}

if answers; then
  exit 0
fi

if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  for attempt in 1 2 3; do
    apt-get update && break
    echo "apt-get update failed (attempt $attempt); retrying" >&2
    sleep 5
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv
fi

if [ ! -x "$VENV/bin/moto_server" ]; then
  mkdir -p "$BASE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet 'moto[server]>=5,<6'
fi

mkdir -p "$DATA"
# moto keeps everything in memory; its log goes beside the venv.
# In a session of its own (setsid), so that it outlives the shell that started it.
(cd "$DATA" && setsid -f "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" \
  >"$DATA/moto.log" 2>&1 </dev/null)

deadline=$((SECONDS + 60))
until answers; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "moto did not answer on $URL within 60s; see $DATA/moto.log" >&2
    exit 1
  fi
  sleep 0.2
done
echo "moto (S3) answers on $URL"
