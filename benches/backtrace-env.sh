#!/usr/bin/env bash
# What an operator's RUST_BACKTRACE costs the node, in one run of one release binary:
# GET /hello (benches/hello.toml, a fresh instance per request) under wrk, 1 thread,
# 32 connections, with
#   - neither variable set (the baseline);
#   - RUST_BACKTRACE=1 alone (common on developer machines; modhost now keeps
#     library backtraces off by itself: main.rs, quiet_library_backtraces);
#   - RUST_BACKTRACE=1 RUST_LIB_BACKTRACE=1 (library backtraces asked for: what every
#     node paid with RUST_BACKTRACE=1 before, wasmtime capturing one per dropped store).
# Prints a Markdown table. Usage: benches/backtrace-env.sh [DURATION] (needs wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }
cargo build --profile guest --target wasm32-wasip2 -p hello
cargo build --release -p modhost --bin modhost
DATA=$(mktemp -d)
PID=
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

# measure LABEL [VAR=VALUE…]: requests/s and p50 of hello, the node started with the variables.
declare -A RPS P50
measure() {
  local label=$1 out
  shift
  env "$@" ./target/release/modhost run benches/hello.toml --listen 127.0.0.1:18080 \
    --data-dir "$DATA" 2>/dev/null &
  PID=$!
  for _ in $(seq 1 200); do curl -sf -o /dev/null http://127.0.0.1:18080/hello && break; sleep 0.05; done
  wrk -t1 -c32 -d3s http://127.0.0.1:18080/hello >/dev/null
  out=$(wrk -t1 -c32 -d"$DURATION" --latency http://127.0.0.1:18080/hello)
  RPS[$label]=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  P50[$label]=$(awk '$1 == "50%" {print $2}' <<<"$out")
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}
LABELS=("neither set" "RUST_BACKTRACE=1" "RUST_BACKTRACE=1 RUST_LIB_BACKTRACE=1")
measure "${LABELS[0]}"
measure "${LABELS[1]}" RUST_BACKTRACE=1
measure "${LABELS[2]}" RUST_BACKTRACE=1 RUST_LIB_BACKTRACE=1

echo
echo "| environment | requests/s | p50 | vs neither |"
echo "| --- | ---: | ---: | ---: |"
for label in "${LABELS[@]}"; do
  echo "| $label | ${RPS[$label]} | ${P50[$label]} | $(awk -v r="${RPS[$label]}" -v b="${RPS[${LABELS[0]}]}" 'BEGIN { printf "%.2f", r / b }') |"
done
