#!/usr/bin/env bash
# Gateway throughput, modhost against its peers, on this machine, in one run:
#   - modhost serving the `hello` module (benches/hello.toml), access log off and on;
#   - `wasmtime serve -Scli` 48.0.8 serving the very same hello.wasm;
#   - a raw hyper 1 server answering `ok` (benches/raw_hyper.rs): the ceiling.
# Load: wrk, 1 thread, 32 connections, 10 s (after a 3 s warm-up), and 1 connection
# for unloaded latency. Prints a Markdown table for BENCHMARKS.md.
#
# Usage: benches/gateway-load.sh [DURATION]   (needs wrk; installs it with apt if root)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
WASMTIME_VERSION=48.0.8
# Backtrace capture on internal errors (wasmtime builds one when it drops a store)
# costs every server here alike; measure as production runs, without it.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }
if ! wasmtime --version 2>/dev/null | grep -q "$WASMTIME_VERSION"; then
  cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked
fi

rustup target add wasm32-wasip2 >/dev/null
cargo build --profile guest --target wasm32-wasip2 -p hello
cargo build --release -p modhost --bin modhost
cargo build --release -p modhost-suite --example raw-hyper
HELLO=target/wasm32-wasip2/guest/hello.wasm
DATA=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$DATA"; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 200); do
    curl -sf -o /dev/null "http://$1/hello" && return 0
    sleep 0.05
  done
  echo "nothing answers on $1" >&2; return 1
}

# measure NAME ADDR: prints "NAME|rps|p50|p99|p50@1conn"
measure() {
  local name=$1 addr=$2
  wait_port "$addr"
  wrk -t1 -c32 -d3s "http://$addr/hello" >/dev/null
  local loaded single
  loaded=$(wrk -t1 -c32 -d"$DURATION" --latency "http://$addr/hello")
  single=$(wrk -t1 -c1 -d5s --latency "http://$addr/hello")
  local rps p50 p99 p50one errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$loaded")
  p50=$(awk '$1=="50%" {print $2}' <<<"$loaded")
  p99=$(awk '$1=="99%" {print $2}' <<<"$loaded")
  p50one=$(awk '$1=="50%" {print $2}' <<<"$single")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$loaded$single")
  [ -z "$errors" ] || echo "WARNING $name: $errors" >&2
  echo "$name|$rps|$p50|$p99|$p50one"
}

run_modhost() {
  MODHOST_LOG=$1 ./target/release/modhost run benches/hello.toml --listen 127.0.0.1:18080 --data-dir "$DATA" 2>/dev/null &
  PIDS+=($!)
  local result; result=$(measure "$2" 127.0.0.1:18080)
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
  echo "$result"
}

RESULTS=()
RESULTS+=("$(run_modhost warn 'modhost (access log off)')")
RESULTS+=("$(run_modhost info,modhost::access=info 'modhost (access log on)')")

wasmtime serve -Scli --addr 127.0.0.1:18081 "$HELLO" 2>/dev/null &
PIDS+=($!)
RESULTS+=("$(measure "wasmtime serve -Scli $WASMTIME_VERSION" 127.0.0.1:18081)")
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

./target/release/examples/raw-hyper 127.0.0.1:18082 2>/dev/null &
PIDS+=($!)
RESULTS+=("$(measure 'raw hyper (ceiling)' 127.0.0.1:18082)")

echo
echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /,""); print; exit}' /proc/cpuinfo), $(uname -sr)"
echo "load: wrk -t1 -c32 -d$DURATION (p50/p99), wrk -t1 -c1 -d5s (p50 @1)"
echo
echo "| server | requests/s | p50 | p99 | p50 @1 conn |"
echo "| --- | ---: | ---: | ---: | ---: |"
for row in "${RESULTS[@]}"; do
  IFS='|' read -r name rps p50 p99 one <<<"$row"
  echo "| $name | $rps | $p50 | $p99 | $one |"
done
modhost_rps=$(cut -d'|' -f2 <<<"${RESULTS[0]}")
serve_rps=$(cut -d'|' -f2 <<<"${RESULTS[2]}")
hyper_rps=$(cut -d'|' -f2 <<<"${RESULTS[3]}")
echo
awk -v m="$modhost_rps" -v s="$serve_rps" -v h="$hyper_rps" \
  'BEGIN { printf "modhost / wasmtime serve = %.2fx; modhost / raw hyper = %.1f%%\n", m/s, 100*m/h }'
