#!/usr/bin/env bash
# Start `plinth run` with the embedded default on ephemeral ports, run the README's
# quickstart client against it, and stop it with SIGTERM. Fails if any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
# Build as the test suite does (whole workspace, the same PLINTH_FEATURES), so features unify
# and nothing is built twice.
features=()
if [ -n "${PLINTH_FEATURES:-}" ]; then features=(--features "$PLINTH_FEATURES"); fi
cargo build --locked --workspace --bins --examples "${features[@]}"

bin="$(realpath "$target/debug/plinth")"
client="$(realpath "$target/debug/examples/quickstart")"
work="$(mktemp -d)"
log="$work/plinth.log"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
# The functions quickstart's bookstore (built by scripts/build-functions.sh).
mkdir -p "$work/fns"
cp "$target/tmp/plinth-functions/function1.wasm" "$target/tmp/plinth-functions/function2.wasm" "$work/fns/"
(cd "$work" && exec "$bin" run --grpc-port 0 --dapr-grpc-port 0 --dapr-http-port 0 --admin-port 0 --functions-port 0 --mesh-port 0 --functions-dir fns --log-format json >"$log" 2>&1) &
pid=$!

# Wait for the startup line that follows every bound listener (at most 30 s).
for _ in $(seq 300); do
  grep -q '"plinth started"' "$log" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "plinth exited during startup" >&2; exit 1; }
  sleep 0.1
done
grep -q '"plinth started"' "$log" || { cat "$log"; echo "plinth did not start" >&2; exit 1; }
grpc=$(grep '"listener":"grpc"' "$log" | sed -E 's/.*"address":"([^"]+)".*/\1/' | head -n1)

PLINTH_GRPC="http://$grpc" "$client"

# The functions quickstart, as the README gives it.
http=$(grep '"listener":"dapr-http"' "$log" | sed -E 's/.*"address":"([^"]+)".*/\1/' | head -n1)
functions=$(grep '"listener":"functions"' "$log" | sed -E 's/.*"address":"([^"]+)".*/\1/' | head -n1)
curl -sSf -X POST "http://$http/v1.0/state/statestore" -H 'content-type: application/json' \
  -d '[{"key":"book1","value":100}]'
answer=$(curl -sSf -H 'id: function1' "http://$functions/?name=book1")
echo "functions: $answer"
[ "$answer" = "There are 100 inventories for book1." ] || { cat "$log"; echo "functions quickstart: unexpected answer" >&2; exit 1; }

kill -TERM "$pid"
wait "$pid"

# The mesh quickstart, as the README gives it, on ephemeral ports: an app (Python's static
# file server) behind sidecar `orders`, called from sidecar `shop` through the shared SQLite
# registry.
mkdir -p "$work/app"
echo "hello from orders" >"$work/app/hello"
(cd "$work/app" && exec python3 -u -m http.server 0 --bind 127.0.0.1 >"$work/app.log" 2>&1) &
app_pid=$!
for _ in $(seq 100); do grep -q "Serving HTTP" "$work/app.log" 2>/dev/null && break; sleep 0.1; done
app_port=$(sed -nE 's/.*port ([0-9]+).*/\1/p' "$work/app.log" | head -n1)
[ -n "$app_port" ] || { cat "$work/app.log"; echo "the app did not start" >&2; exit 1; }
cat >"$work/mesh.yaml" <<YAML
apiVersion: plinth.dev/v1alpha1
kind: Configuration
metadata: {name: mesh}
spec:
  nameResolution:
    component: sqlite
    configuration: {connectionString: $work/registry.db}
YAML
ports=(--grpc-port 0 --dapr-grpc-port 0 --dapr-http-port 0 --admin-port 0 --functions-port 0 --mesh-port 0 --log-format json)
(cd "$work" && exec "$bin" run --config mesh.yaml "${ports[@]}" --app-id orders --app-port "$app_port" >"$work/orders.log" 2>&1) &
orders_pid=$!
(cd "$work" && exec "$bin" run --config mesh.yaml "${ports[@]}" --app-id shop >"$work/shop.log" 2>&1) &
shop_pid=$!
trap 'kill "$pid" "$app_pid" "$orders_pid" "$shop_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for name in orders shop; do
  for _ in $(seq 300); do grep -q '"plinth started"' "$work/$name.log" 2>/dev/null && break; sleep 0.1; done
  grep -q '"plinth started"' "$work/$name.log" || { cat "$work/$name.log"; echo "sidecar $name did not start" >&2; exit 1; }
done
shop_http=$(grep '"listener":"dapr-http"' "$work/shop.log" | sed -E 's/.*"address":"([^"]+)".*/\1/' | head -n1)
answer=$(curl -sSf "http://$shop_http/v1.0/invoke/orders/method/hello")
echo "mesh: $answer"
[ "$answer" = "hello from orders" ] || { cat "$work/orders.log" "$work/shop.log"; echo "mesh quickstart: unexpected answer" >&2; exit 1; }
kill -TERM "$orders_pid" "$shop_pid"
wait "$orders_pid" "$shop_pid"
kill "$app_pid"

echo "quickstart-check: OK"
