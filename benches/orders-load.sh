#!/usr/bin/env bash
# Order placement through the gateway, on this machine: POST /orders on the example
# shop, each order one request into `orders` plus three typed calls (inventory.reserve,
# fraud.assess — the Python module, which calls users.get in turn — payments.charge),
# two writes of the order, and the events that follow (payments.charged → orders,
# notifications). Stock is raised by a bench-only
# migration so that every order can succeed: every answer must be 201; any other is
# reported.
#
# Three deployments in one run:
# - one node, as shipped (inventory and fraud reuse warm instances), embedded event bus;
# - one node, every instance fresh;
# - split over three nodes (users/catalog/orders/notifications | inventory, payments |
#   fraud),
#   separate processes with mutual TLS, events through a Kafka-protocol broker
#   (tansu, in memory, started here), load on node a.
# Load: wrk, 1 thread, 32 connections, DURATION (after a 3 s warm-up), and 1
# connection for unloaded latency.
#
# Usage: benches/orders-load.sh [DURATION]   (needs wrk, and tansu: ./test.sh installs it)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/support/lib.sh
DURATION=${1:-10s}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
TANSU=${MODHOST_TANSU:-$HOME/.cache/modhost/tools/bin/tansu}
[ -x "$TANSU" ] || { echo "no tansu at $TANSU: run ./test.sh once (it installs it)" >&2; exit 1; }

command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }
rustup target add wasm32-wasip2 >/dev/null
cargo build --profile guest --target wasm32-wasip2 -p users -p catalog -p inventory -p payments -p orders -p notifications
cargo build --release -p modhost --bin modhost
./target/release/modhost build config/single-node.toml  # the Python module, too

WORK=$(mktemp -d)
PIDS=()
stop_all() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; PIDS=(); }
trap 'stop_all; rm -rf "$WORK"' EXIT
GUEST="$PWD/target/wasm32-wasip2/guest"

# The bench shop: `shop FILE INVENTORY-INSTANCES EVENTS-SECTION`.
source benches/shop.sh

# measure NAME URL: prints "NAME|rps|p50|p99|p50@1conn"
measure() {
  wrk -t1 -c32 -d3s -s benches/order.lua "$2" >/dev/null
  local loaded single errors
  loaded=$(wrk -t1 -c32 -d"$DURATION" --latency -s benches/order.lua "$2")
  single=$(wrk -t1 -c1 -d5s --latency -s benches/order.lua "$2")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$loaded$single")
  [ -z "$errors" ] || echo "WARNING $1: $errors" >&2
  echo "$1|$(awk '/Requests\/sec/ {print $2}' <<<"$loaded")|$(awk '$1=="50%" {print $2}' <<<"$loaded")|$(awk '$1=="99%" {print $2}' <<<"$loaded")|$(awk '$1=="50%" {print $2}' <<<"$single")"
}

wait_ready() { for _ in $(seq 1 400); do curl -sf -o /dev/null "$1/readyz" && return; sleep 0.05; done; echo "not ready: $1" >&2; exit 1; }

RESULTS=()
ADDR=127.0.0.1:$(free_port)
for variant in reuse fresh; do
  shop "$WORK/one-$variant.toml" "$variant" 'backend = "embedded"'
  MODHOST_LOG=warn ./target/release/modhost run "$WORK/one-$variant.toml" --listen "$ADDR" \
    --data-dir "$WORK/data-one-$variant" 2>"$WORK/one-$variant.log" &
  PIDS+=($!)
  wait_ready "http://$ADDR"
  name="one node, inventory and fraud reused"; [ "$variant" = fresh ] && name="one node, every instance fresh"
  RESULTS+=("$(measure "$name" "http://$ADDR/orders")")
  stop_all
done

KAFKA=$(free_port)
"$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA" --advertised-listener-url "tcp://127.0.0.1:$KAFKA" \
  --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1 &
PIDS+=($!)
SPLIT="$WORK/split.toml"
shop "$SPLIT" reuse "backend = \"kafka\"
brokers = \"127.0.0.1:$KAFKA\"
partitions = 3"
declare -A GATEWAY
for node in a b c; do
  GATEWAY[$node]=127.0.0.1:$(free_port)
  printf '[nodes.%s]\nlisten = "%s"\nmesh = "127.0.0.1:%s"\n' "$node" "${GATEWAY[$node]}" "$(free_port)" >> "$SPLIT"
done
cat >> "$SPLIT" <<TOML
[placement]
users = ["a"]
catalog = ["a"]
orders = ["a"]
notifications = ["a"]
inventory = ["b"]
payments = ["b"]
fraud = ["c"]
[mesh]
ca = "certs/ca.pem"
cert = "certs/{node}.pem"
key = "certs/{node}.key"
TOML
./target/release/modhost certs "$SPLIT" >/dev/null
for node in a b c; do
  MODHOST_LOG=warn ./target/release/modhost run "$SPLIT" --node "$node" --data-dir "$WORK/data-$node" \
    2>"$WORK/split-$node.log" &
  PIDS+=($!)
done
for node in a b c; do wait_ready "http://${GATEWAY[$node]}"; done
RESULTS+=("$(measure "three nodes (mTLS mesh, Kafka events)" "http://${GATEWAY[a]}/orders")")
stop_all

echo
echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /,""); print; exit}' /proc/cpuinfo), $(uname -sr)"
echo "load: wrk -t1 -c32 -d$DURATION -s benches/order.lua (p50/p99), wrk -t1 -c1 -d5s (p50 @1)"
echo
echo "| deployment | orders/s | p50 | p99 | p50 @1 conn |"
echo "| --- | ---: | ---: | ---: | ---: |"
for row in "${RESULTS[@]}"; do
  IFS='|' read -r name rps p50 p99 one <<<"$row"
  echo "| $name | $rps | $p50 | $p99 | $one |"
done
