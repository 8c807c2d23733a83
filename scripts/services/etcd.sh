#!/usr/bin/env bash
# etcd v3 for the etcd components' tests, and protoc for building them (the `etcd` feature's
# etcd-client crate compiles etcd's protobuf files). Installs Debian's packages when missing,
# starts etcd on 127.0.0.1:2379 (peers 127.0.0.1:2380) with its data under
# ${XDG_CACHE_HOME:-$HOME/.cache}/plinth/etcd, and waits until it answers. Does nothing when
# etcd already answers there.
set -euo pipefail

CLIENT_URL=http://127.0.0.1:2379
PEER_URL=http://127.0.0.1:2380
DATA="${XDG_CACHE_HOME:-$HOME/.cache}/plinth/etcd"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  local tries=0
  until as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q; do
    tries=$((tries + 1))
    if [ "$tries" -ge 3 ]; then
      echo "etcd.sh: apt-get update failed $tries times" >&2
      exit 1
    fi
    sleep 5
  done
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

healthy() {
  curl -fsS --max-time 2 "$CLIENT_URL/health" 2>/dev/null | grep -q '"health":"true"'
}

missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "etcd.sh: installing ${missing[*]}"
  apt_install "${missing[@]}"
fi

if healthy; then
  echo "etcd.sh: etcd already answers on $CLIENT_URL"
  exit 0
fi

mkdir -p "$DATA"
echo "etcd.sh: starting etcd on $CLIENT_URL, data in $DATA"
setsid -f etcd \
  --name plinth-test \
  --data-dir "$DATA/data" \
  --listen-client-urls "$CLIENT_URL" \
  --advertise-client-urls "$CLIENT_URL" \
  --listen-peer-urls "$PEER_URL" \
  --initial-advertise-peer-urls "$PEER_URL" \
  --initial-cluster "plinth-test=$PEER_URL" \
  --initial-cluster-state new \
  >"$DATA/etcd.log" 2>&1 </dev/null

deadline=$((SECONDS + 60))
until healthy; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "etcd.sh: etcd did not answer on $CLIENT_URL within 60s; its log:" >&2
    tail -n 40 "$DATA/etcd.log" >&2 || true
    exit 1
  fi
  sleep 0.5
done
echo "etcd.sh: etcd answers on $CLIENT_URL"
