#!/usr/bin/env bash
# What exporting spans costs a request, in one run: the gateway alone (the `hello`
# module, one span per request) and order placement on one node (a request into
# `orders`, two calls, the events that follow: about six spans per order), each with
# tracing off, on at 1% sampling and on at 100%, against an OTLP sink that takes
# every batch (benches/otlp_sink.py). The variants take turns, ROUNDS times.
# Load: wrk, 1 thread, 32 connections, DURATION after a 3 s warm-up.
#
# Usage: benches/tracing-load.sh [ROUNDS] [DURATION]   (needs wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/support/lib.sh
ROUNDS=${1:-3}
DURATION=${2:-10s}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }
rustup target add wasm32-wasip2 >/dev/null
cargo build --profile guest --target wasm32-wasip2 -p hello -p users -p catalog -p inventory -p payments -p orders -p notifications
cargo build --release -p modhost --bin modhost

WORK=$(mktemp -d)
GUEST="$PWD/target/wasm32-wasip2/guest"
PIDS=()
stop_all() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; PIDS=(); }
SINK_PORT=$(free_port)
python3 benches/otlp_sink.py "$SINK_PORT" & SINK=$!
trap 'stop_all; kill $SINK 2>/dev/null; rm -rf "$WORK"' EXIT
source benches/shop.sh

telemetry() { # telemetry off|1%|100%
  case $1 in
    off) ;;
    1%) printf '[telemetry]\notlp = "http://127.0.0.1:%s"\nsampling = 0.01\n' "$SINK_PORT" ;;
    100%) printf '[telemetry]\notlp = "http://127.0.0.1:%s"\nsampling = 1.0\n' "$SINK_PORT" ;;
  esac
}

ADDR=127.0.0.1:$(free_port)
wait_ready() { for _ in $(seq 1 400); do curl -sf -o /dev/null "http://$ADDR/readyz" && return; sleep 0.05; done; echo "not ready" >&2; exit 1; }
rate() { # rate ARGS…: 2xx answers per second
  local out; out=$(wrk -t1 -c32 -d"$DURATION" "$@")
  awk '/requests in/ {n=$1; t=$4; sub(/s,?$/,"",t)} /Non-2xx/ {bad=$5} END {printf "%.0f", (n-bad)/t}' <<<"$out"
}
run() { # run NAME FILE
  MODHOST_LOG=warn ./target/release/modhost run "$2" --listen "$ADDR" --data-dir "$WORK/data-$1-$round" 2>"$WORK/$1.log" &
  PIDS+=($!)
  wait_ready
}

for round in $(seq 1 "$ROUNDS"); do
  for tracing in off 1% 100%; do
    name=${tracing%\%}
    { cat benches/hello.toml | sed "s|\.\./target/wasm32-wasip2/guest|$GUEST|"; telemetry "$tracing"; } > "$WORK/hello-$name.toml"
    run "hello-$name" "$WORK/hello-$name.toml"
    wrk -t1 -c32 -d3s "http://$ADDR/hello" >/dev/null
    hello=$(rate "http://$ADDR/hello")
    stop_all
    shop "$WORK/shop-$name.toml" reuse 'backend = "embedded"' "$(telemetry "$tracing")"
    run "shop-$name" "$WORK/shop-$name.toml"
    wrk -t1 -c32 -d3s -s benches/order.lua "http://$ADDR/orders" >/dev/null
    orders=$(rate -s benches/order.lua "http://$ADDR/orders")
    stop_all
    echo "round $round tracing $tracing: hello $hello/s, orders $orders/s"
  done
done
echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /,""); print; exit}' /proc/cpuinfo), $(uname -sr)"
