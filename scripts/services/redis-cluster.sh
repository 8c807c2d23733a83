#!/usr/bin/env bash
# A 3-master Redis Cluster on 127.0.0.1:17001-17003 for the `*.redis` components' cluster
# tests (PLINTH_TEST_REDIS_CLUSTER). Idempotent: installs redis-server only when missing,
# starts only the nodes that do not answer, creates the cluster only when it is not ok.
set -euo pipefail

PORTS=(17001 17002 17003)
DATA="${XDG_CACHE_HOME:-$HOME/.cache}/plinth/redis-cluster"
DEADLINE_SECONDS=30

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install() {
  for attempt in 1 2 3; do
    if as_root apt-get update; then break; fi
    echo "apt-get update failed (attempt $attempt); retrying" >&2
    sleep 5
  done
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools
}

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  install
fi

answers() { redis-cli -h 127.0.0.1 -p "$1" PING 2>/dev/null | grep -q PONG; }

for port in "${PORTS[@]}"; do
  if answers "$port"; then continue; fi
  dir="$DATA/$port"
  mkdir -p "$dir"
  # A node that restarts without its old cluster peers must not reload a stale topology.
  rm -f "$dir/nodes.conf"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
    --daemonize yes --save "" --appendonly no \
    --logfile "$dir/redis.log" --pidfile "$dir/redis.pid"
done

wait_until() {
  local what="$1"
  shift
  local deadline=$((SECONDS + DEADLINE_SECONDS))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "redis-cluster: $what within ${DEADLINE_SECONDS}s (logs under $DATA)" >&2
      exit 1
    fi
    sleep 0.2
  done
}

all_answer() {
  for port in "${PORTS[@]}"; do answers "$port" || return 1; done
}
wait_until "not every node answered" all_answer

cluster_ok() {
  for port in "${PORTS[@]}"; do
    redis-cli -h 127.0.0.1 -p "$port" CLUSTER INFO 2>/dev/null | grep -q 'cluster_state:ok' || return 1
  done
}

create() {
  local nodes=()
  for port in "${PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes
}

if ! cluster_ok; then
  # A node restarted alone comes back empty while its peers still hold slots: then start
  # over. These nodes are this script's own, so emptying them loses only test data.
  if ! create; then
    for port in "${PORTS[@]}"; do
      redis-cli -h 127.0.0.1 -p "$port" FLUSHALL >/dev/null
      redis-cli -h 127.0.0.1 -p "$port" CLUSTER RESET HARD >/dev/null
    done
    create
  fi
fi
wait_until "the cluster did not reach cluster_state:ok" cluster_ok
echo "redis-cluster: ok on ${PORTS[*]}"
