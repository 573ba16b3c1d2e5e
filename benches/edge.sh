#!/usr/bin/env bash
# modhost on a small machine: what a precompiled deployment costs to start and to keep,
# and what one core serves. One release binary, in one run:
#
#   - the binary: size as built and stripped;
#   - start to ready with 1, 6 and 50 precompiled modules (copies of the SDK's `hello`,
#     each its own module with its own route and pool), the node's own startup_ms,
#     median of ROUNDS fresh starts; resident memory once every module has answered one
#     request; memory per idle module = (50 modules − 1 module) / 49;
#   - config/edge.toml (users and catalog, precompiled, SQLite, key-value cache) with
#     the node pinned to one core (taskset -c 0) and wrk on the other: requests/s at 8
#     connections for GET /users/2 and GET /catalog/products/KB-001, against GET /hello
#     (the smallest module, also pinned) as the baseline of the same run.
#
# Prints a Markdown table. Usage: benches/edge.sh [DURATION] [ROUNDS]   (needs wrk, taskset)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/support/lib.sh
DURATION=${1:-10s}
ROUNDS=${2:-5}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }

rustup target add wasm32-wasip2 >/dev/null
cargo build --profile guest --target wasm32-wasip2 -p hello -p users -p catalog
cargo build --release -p modhost --bin modhost
MODHOST=$PWD/target/release/modhost
WORK=$(mktemp -d)
PID=
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

"$MODHOST" compile target/wasm32-wasip2/guest/{hello,users,catalog}.wasm --out-dir "$WORK/cwasm" >/dev/null
strip -o "$WORK/modhost.stripped" "$MODHOST"

rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }

hellos() { # FILE COUNT: COUNT precompiled hello modules, /h1 … /hCOUNT
  {
    echo '[app]'
    echo 'name = "edge-bench"'
    for i in $(seq 1 "$2"); do
      echo "[modules.h$i]"
      echo "component = \"$WORK/cwasm/hello.cwasm\""
      echo "routes = [\"/h$i\"]"
      echo 'limits = { memory = "16MiB", timeout = "1s", concurrency = 32 }'
    done
  } > "$1"
}

start() { # FILE [TASKSET-PREFIX…]: starts modhost on FILE; startup_ms in STARTUP
  local file=$1
  shift
  rm -rf "$WORK/data"
  MODHOST_LOG=info "$@" "$MODHOST" --log-format json run "$file" --listen 127.0.0.1:18096 \
    --data-dir "$WORK/data" >"$WORK/log" 2>&1 &
  PID=$!
  for _ in $(seq 1 800); do grep -q '"modhost ready"' "$WORK/log" && break; sleep 0.025; done
  grep -q '"modhost ready"' "$WORK/log" || { cat "$WORK/log" >&2; exit 1; }
  STARTUP=$(grep '"modhost ready"' "$WORK/log" | sed -E 's/.*"startup_ms":([0-9.]+).*/\1/')
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }

declare -A READY MEMORY
for count in 1 6 50; do
  hellos "$WORK/h$count.toml" "$count"
  readies=""
  for _ in $(seq 1 "$ROUNDS"); do
    start "$WORK/h$count.toml"
    readies+="$STARTUP "
    stop
  done
  READY[$count]=$(median "$readies" | awk '{ printf "%.1f", $1 }')
  start "$WORK/h$count.toml"
  for i in $(seq 1 "$count"); do
    [ "$(curl -s "http://127.0.0.1:18096/h$i")" = ok ] || { echo "h$i did not answer" >&2; exit 1; }
  done
  MEMORY[$count]=$(rss)
  stop
done

# The edge config, its components precompiled here, its data in WORK.
sed -e "s#\.\./\.modhost/edge/#$WORK/cwasm/#" -e "s#\.\./modules/#$PWD/modules/#" \
  -e 's#0.0.0.0:8080#127.0.0.1:18096#' config/edge.toml > "$WORK/edge.toml"
cat >> "$WORK/edge.toml" <<EOF

[modules.hello]
component = "$WORK/cwasm/hello.cwasm"
routes = ["/hello"]
limits = { memory = "16MiB", timeout = "1s", concurrency = 32 }
EOF
declare -A RPS P50
cores=$(nproc)
start "$WORK/edge.toml" taskset -c 0
EDGE_READY=$(awk -v s="$STARTUP" 'BEGIN { printf "%.1f", s }')
for route in /hello /users/2 /catalog/products/KB-001; do
  url="http://127.0.0.1:18096$route"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ] || { echo "$route is not 200" >&2; exit 1; }
  taskset -c $((cores - 1)) wrk -t1 -c8 -d2s "$url" >/dev/null
  out=$(taskset -c $((cores - 1)) wrk -t1 -c8 -d"$DURATION" --latency "$url")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
  [ -z "$errors" ] || echo "WARNING $route: $errors" >&2
  RPS[$route]=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  P50[$route]=$(awk '$1 == "50%" {print $2}' <<<"$out")
done
EDGE_MEMORY=$(rss)
stop

echo
echo "| figure | value |"
echo "| --- | ---: |"
echo "| binary, as built (release, line tables) | $(du -m "$MODHOST" | cut -f1) MB |"
echo "| binary, stripped | $(du -m "$WORK/modhost.stripped" | cut -f1) MB |"
for count in 1 6 50; do
  echo "| $count precompiled module(s): start to ready (startup_ms, median of $ROUNDS) | ${READY[$count]} ms |"
  echo "| $count precompiled module(s): resident after one request each | $(mib "${MEMORY[$count]}") MiB |"
done
echo "| memory per idle module ((50 − 1) / 49) | $(awk -v a="${MEMORY[50]}" -v b="${MEMORY[1]}" 'BEGIN { printf "%.0f", (a - b) / 49 }') KiB |"
echo "| config/edge.toml (+ hello), pinned to one core: start to ready | $EDGE_READY ms |"
echo "| … resident after the load | $(mib "$EDGE_MEMORY") MiB |"
echo
echo "| route (one core, 8 connections) | requests/s | p50 | vs /hello |"
echo "| --- | ---: | ---: | ---: |"
for route in /hello /users/2 /catalog/products/KB-001; do
  echo "| GET $route | ${RPS[$route]} | ${P50[$route]} | $(awk -v r="${RPS[$route]}" -v h="${RPS[/hello]}" 'BEGIN { printf "%.2f", r / h }') |"
done
