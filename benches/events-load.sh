#!/usr/bin/env bash
# Events end to end on this machine: publish → outbox → relay → bus → inbox + handler
# effect, on the embedded bus and on Kafka (tansu, in memory, started here as the tests
# do), in single-event transactions and in batches of 100 events per transaction.
#
# Two instances of the `eventprobe` test module: `source` publishes over HTTP (one
# transaction per request, each event also recorded in its own table), `sink`
# subscribes and records each event in its handler's transaction. The driver
# (benches/events_load.rs) publishes EVENTS events from 8 concurrent connections and
# reports events/s from the first publish to the last handler effect. SQLite module
# databases; release builds.
#
# Usage: benches/events-load.sh [EVENTS]   (default 20000; needs tansu: ./test.sh installs it)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/support/lib.sh
EVENTS=${1:-20000}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
TANSU=${MODHOST_TANSU:-$HOME/.cache/modhost/tools/bin/tansu}
[ -x "$TANSU" ] || { echo "no tansu at $TANSU: run ./test.sh once (it installs it)" >&2; exit 1; }

rustup target add wasm32-wasip2 >/dev/null
cargo build --profile guest --target wasm32-wasip2 -p eventprobe
cargo build --release -p modhost --bin modhost
cargo build --release -p modhost-suite --example events-load

WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

KAFKA_PORT=$(free_port)
"$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine memory://tansu/ \
  >"$WORK/tansu.log" 2>&1 &
PIDS+=($!)

deployment() { # deployment NAME EVENTS-SECTION [SINK-INSTANCES]
  cat > "$WORK/$1.toml" <<TOML
[app]
name = "bench-$1"
data_dir = "$WORK/data-$1"
[gateway]
listen = "127.0.0.1:18096"
[events]
$2
[modules.source]
component = "$PWD/target/wasm32-wasip2/guest/eventprobe.wasm"
routes = ["/source"]
database = "sqlite"
migrations = "$PWD/modules/testing/eventprobe/migrations"
publishes = ["probe.events"]
subscribes = ["probe.forwarded"]
limits = { concurrency = 256 }
[modules.sink]
component = "$PWD/target/wasm32-wasip2/guest/eventprobe.wasm"
routes = ["/sink"]
database = "sqlite"
migrations = "$PWD/modules/testing/eventprobe/migrations"
publishes = ["probe.forwarded"]
subscribes = ["probe.events"]
limits = { concurrency = 256 }
instances = "${3:-fresh}"
TOML
}
deployment embedded 'backend = "embedded"'
deployment embedded-reuse 'backend = "embedded"' reuse
deployment kafka "backend = \"kafka\"
brokers = \"127.0.0.1:$KAFKA_PORT\"
partitions = 6"

ROWS=()
for bus in embedded kafka embedded-reuse; do
  for per_tx in 1 100; do
    [ "$bus" = embedded-reuse ] && [ "$per_tx" = 1 ] && continue
    rm -rf "$WORK/data-$bus"
    MODHOST_LOG=warn ./target/release/modhost run "$WORK/$bus.toml" 2>"$WORK/$bus-$per_tx.log" &
    PID=$!; PIDS+=($PID)
    for _ in $(seq 1 400); do curl -sf -o /dev/null http://127.0.0.1:18096/readyz && break; sleep 0.05; done
    # Warm-up: compile caches, the consumer group joined, the topics in place.
    ./target/release/examples/events-load http://127.0.0.1:18096 --events 200 --per-tx 100 >/dev/null
    line=$(./target/release/examples/events-load http://127.0.0.1:18096 --events "$EVENTS" --per-tx "$per_tx" --connections 8)
    echo "$bus: $line"
    ROWS+=("$bus|$per_tx|$line")
    kill "$PID"; wait "$PID" 2>/dev/null || true
  done
done

echo
echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /,""); print; exit}' /proc/cpuinfo), $(uname -sr); $("$TANSU" --version)"
echo
echo "| bus (handler instances) | events per transaction | events | end to end | events/s |"
echo "| --- | ---: | ---: | ---: | ---: |"
for row in "${ROWS[@]}"; do
  IFS='|' read -r bus per_tx line <<<"$row"
  total=$(sed -E 's/.*events=([0-9]+).*/\1/' <<<"$line")
  took=$(sed -E 's/.*end_to_end=([0-9.]+s).*/\1/' <<<"$line")
  rate=$(sed -E 's/.*events_per_s=([0-9]+).*/\1/' <<<"$line")
  echo "| $bus | $per_tx | $total | $took | $rate |"
done
