#!/usr/bin/env bash
# Order placement through the gateway, on this machine: POST /orders on the example
# shop (config/single-node.toml), each order one request into `orders` plus two typed
# calls (inventory.reserve, payments.charge). Measured twice in one run: as shipped
# (inventory reuses warm instances) and with every module on fresh instances.
# Load: wrk, 1 thread, 32 connections, DURATION (after a 3 s warm-up), and 1
# connection for unloaded latency. Every answer must be 201; any other is reported.
#
# Usage: benches/orders-load.sh [DURATION]   (needs wrk; installs it with apt if root)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }
cargo build --profile guest --target wasm32-wasip2 -p users -p catalog -p inventory -p payments -p orders
cargo build --release -p modhost --bin modhost

DATA=$(mktemp -d)
PID=
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
ADDR=127.0.0.1:18090

# run NAME FILE: prints "NAME|rps|p50|p99|p50@1conn"
run() {
  MODHOST_LOG=warn ./target/release/modhost run "$2" --listen "$ADDR" --data-dir "$DATA" 2>/dev/null &
  PID=$!
  for _ in $(seq 1 200); do curl -sf -o /dev/null "http://$ADDR/readyz" && break; sleep 0.05; done
  wrk -t1 -c32 -d3s -s benches/order.lua "http://$ADDR/orders" >/dev/null
  local loaded single
  loaded=$(wrk -t1 -c32 -d"$DURATION" --latency -s benches/order.lua "http://$ADDR/orders")
  single=$(wrk -t1 -c1 -d5s --latency -s benches/order.lua "http://$ADDR/orders")
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  local errors
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$loaded$single")
  [ -z "$errors" ] || echo "WARNING $1: $errors" >&2
  echo "$1|$(awk '/Requests\/sec/ {print $2}' <<<"$loaded")|$(awk '$1=="50%" {print $2}' <<<"$loaded")|$(awk '$1=="99%" {print $2}' <<<"$loaded")|$(awk '$1=="50%" {print $2}' <<<"$single")"
}

# The same deployment with every module on fresh instances.
sed '/^instances = "reuse"/d' config/single-node.toml > config/.orders-load-fresh.toml
trap 'cleanup; rm -f config/.orders-load-fresh.toml' EXIT

RESULTS=()
RESULTS+=("$(run 'as shipped (inventory reused)' config/single-node.toml)")
RESULTS+=("$(run 'every instance fresh' config/.orders-load-fresh.toml)")

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
