#!/usr/bin/env bash
# modhost on a small machine: what a precompiled deployment costs to start and to keep,
# and what one core serves — for three builds, in one run:
#
#   default   the default release build (compiler for every architecture, Kafka,
#             Postgres, the mesh), x86_64;
#   edge      the edge build (`--no-default-features`), x86_64;
#   aarch64   the edge build for aarch64-unknown-linux-gnu, run under qemu-aarch64
#             (EMULATED: its times and memory are qemu's, not a real ARM machine's).
#
# For each: the binary's size stripped; start to ready with 1, 6 and 50 precompiled
# modules (copies of the SDK's `hello`, each its own module with its own route and
# a pool of one instance; the node's own startup_ms, median of ROUNDS fresh starts); resident memory
# once every module has answered one request; memory per idle module = (50 modules −
# 1 module) / 49; config/edge.toml (users and catalog, precompiled, SQLite, key-value
# cache) with the node pinned to one core (taskset -c 0) and wrk on the other:
# requests/s at 8 connections for GET /users/2 and GET /catalog/products/KB-001,
# against GET /hello (the smallest module, same node) as the baseline of the same run.
# Modules are precompiled by the default build, for x86_64 and for aarch64.
#
# Prints Markdown tables. Usage: benches/edge.sh [DURATION] [ROUNDS]
# (needs wrk, taskset; for aarch64: gcc-aarch64-linux-gnu, qemu-user)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/support/lib.sh
DURATION=${1:-10s}
ROUNDS=${2:-5}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }
AARCH64=aarch64-unknown-linux-gnu

rustup target add wasm32-wasip2 "$AARCH64" >/dev/null
cargo build --profile guest --target wasm32-wasip2 -p hello -p users -p catalog
cargo build --release -p modhost --bin modhost
# The edge build in a target directory of its own, so the default one is kept.
cargo build --release -p modhost --bin modhost --no-default-features --target-dir target/edge
cargo build --release -p modhost --bin modhost --no-default-features --target "$AARCH64"
DEFAULT=$PWD/target/release/modhost
EDGE=$PWD/target/edge/release/modhost
ARM=$PWD/target/$AARCH64/release/modhost
WORK=$(mktemp -d)
PID=
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

"$DEFAULT" compile target/wasm32-wasip2/guest/{hello,users,catalog}.wasm --out-dir "$WORK/x86_64" >/dev/null
"$DEFAULT" compile --target "$AARCH64" target/wasm32-wasip2/guest/{hello,users,catalog}.wasm \
  --out-dir "$WORK/aarch64" >/dev/null
strip -o "$WORK/default.stripped" "$DEFAULT"
strip -o "$WORK/edge.stripped" "$EDGE"
aarch64-linux-gnu-strip -o "$WORK/aarch64.stripped" "$ARM"

rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }

hellos() { # FILE COUNT CWASM-DIR: COUNT precompiled hello modules, /h1 … /hCOUNT
  {
    echo '[app]'
    echo 'name = "edge-bench"'
    for i in $(seq 1 "$2"); do
      echo "[modules.h$i]"
      echo "component = \"$3/hello.cwasm\""
      echo "routes = [\"/h$i\"]"
      # One instance at a time: a pool slot costs nothing natively until used, but
      # under qemu-user each one's memory is resident from the start (~50 MB), and
      # 50 modules × 32 would not fit the machine.
      echo 'limits = { memory = "16MiB", timeout = "1s", concurrency = 1 }'
    done
  } > "$1"
}

# start FILE [PREFIX…]: starts RUN (the build measured) on FILE behind PREFIX (taskset);
# startup_ms in STARTUP.
start() {
  local file=$1
  shift
  rm -rf "$WORK/data"
  MODHOST_LOG=info "$@" "${RUN[@]}" --log-format json run "$file" --listen 127.0.0.1:18096 \
    --data-dir "$WORK/data" >"$WORK/log" 2>&1 &
  PID=$!
  for _ in $(seq 1 2400); do grep -q '"modhost ready"' "$WORK/log" && break; sleep 0.025; done
  grep -q '"modhost ready"' "$WORK/log" || { cat "$WORK/log" >&2; exit 1; }
  STARTUP=$(grep '"modhost ready"' "$WORK/log" | sed -E 's/.*"startup_ms":([0-9.]+).*/\1/')
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }

declare -A READY MEMORY RPS P50 EDGE_READY EDGE_MEMORY
cores=$(nproc)
ROUTES=(/hello /users/2 /catalog/products/KB-001)

# measure BUILD CWASM-DIR: every figure of one build (RUN is how to start it).
measure() {
  local build=$1 cwasm=$2
  for count in 1 6 50; do
    hellos "$WORK/h$count.toml" "$count" "$cwasm"
    local readies=""
    for _ in $(seq 1 "$ROUNDS"); do
      start "$WORK/h$count.toml"
      readies+="$STARTUP "
      stop
    done
    READY[$build,$count]=$(median "$readies" | awk '{ printf "%.1f", $1 }')
    start "$WORK/h$count.toml"
    for i in $(seq 1 "$count"); do
      [ "$(curl -s "http://127.0.0.1:18096/h$i")" = ok ] || { echo "$build: h$i did not answer" >&2; exit 1; }
    done
    MEMORY[$build,$count]=$(rss)
    stop
  done

  # The edge config, its components precompiled for the build, its data in WORK.
  sed -e "s#\.\./\.modhost/edge/#$cwasm/#" -e "s#\.\./modules/#$PWD/modules/#" \
    -e 's#0.0.0.0:8080#127.0.0.1:18096#' config/edge.toml > "$WORK/edge.toml"
  cat >> "$WORK/edge.toml" <<EOF

[modules.hello]
component = "$cwasm/hello.cwasm"
routes = ["/hello"]
limits = { memory = "16MiB", timeout = "1s", concurrency = 32 }
EOF
  start "$WORK/edge.toml" taskset -c 0
  EDGE_READY[$build]=$(awk -v s="$STARTUP" 'BEGIN { printf "%.1f", s }')
  for route in "${ROUTES[@]}"; do
    local url="http://127.0.0.1:18096$route" out errors
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ] || { echo "$build: $route is not 200" >&2; exit 1; }
    taskset -c $((cores - 1)) wrk -t1 -c8 -d2s "$url" >/dev/null
    out=$(taskset -c $((cores - 1)) wrk -t1 -c8 -d"$DURATION" --latency "$url")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    [ -z "$errors" ] || echo "WARNING $build $route: $errors" >&2
    RPS[$build,$route]=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    P50[$build,$route]=$(awk '$1 == "50%" {print $2}' <<<"$out")
  done
  EDGE_MEMORY[$build]=$(rss)
  stop
}

RUN=("$DEFAULT")
measure default "$WORK/x86_64"
RUN=("$EDGE")
measure edge "$WORK/x86_64"
RUN=(qemu-aarch64 -L /usr/aarch64-linux-gnu "$ARM")
measure aarch64 "$WORK/aarch64"

BUILDS=(default edge aarch64)
row() { # LABEL FORMAT-FUNCTION: one row, a column per build
  local label=$1 cells="" build
  shift
  for build in "${BUILDS[@]}"; do cells+=" $("$@" "$build") |"; done
  echo "| $label |$cells"
}
size_of() { echo "$(du -m "$WORK/$1.stripped" | cut -f1) MB"; }
ready_of() { echo "${READY[$1,$COUNT]} ms"; }
memory_of() { echo "$(mib "${MEMORY[$1,$COUNT]}") MiB"; }
per_module_of() {
  awk -v a="${MEMORY[$1,50]}" -v b="${MEMORY[$1,1]}" 'BEGIN { printf "%.0f KiB", (a - b) / 49 }'
}
edge_ready_of() { echo "${EDGE_READY[$1]} ms"; }
edge_memory_of() { echo "$(mib "${EDGE_MEMORY[$1]}") MiB"; }
rps_of() {
  awk -v r="${RPS[$1,$ROUTE]}" -v h="${RPS[$1,/hello]}" -v p="${P50[$1,$ROUTE]}" \
    'BEGIN { printf "%d (%.2f×, p50 %s)", r, r / h, p }'
}

echo
echo "| figure | default, x86_64 | edge, x86_64 | edge, aarch64 under qemu (emulated) |"
echo "| --- | ---: | ---: | ---: |"
row "binary, stripped" size_of
for COUNT in 1 6 50; do
  row "$COUNT precompiled module(s): start to ready (median of $ROUNDS)" ready_of
  row "$COUNT precompiled module(s): resident after one request each" memory_of
done
row "memory per idle module ((50 − 1) / 49)" per_module_of
row "config/edge.toml (+ hello), pinned to one core: start to ready" edge_ready_of
row "… resident after the load" edge_memory_of
for ROUTE in "${ROUTES[@]}"; do
  row "GET $ROUTE, one core, 8 connections: requests/s (vs /hello)" rps_of
done
