#!/usr/bin/env bash
# What serving WASI 0.3 costs, and whether it slows WASI 0.2 modules, in one run.
#
# Two deployments of three modules, served in turn by one release modhost, for ROUNDS
# rounds:
#   - "0.2 only": the SDK's `hello` module (GET /hello answers `ok`), the bare
#     wasi:http component `plainhttp` (GET /plain answers a 39-byte greeting) and the
#     wstd server `wstdserver` (unused: it is there so both deployments hold three
#     modules and size their pools alike);
#   - "0.2 + 0.3": the same first two, plus `p3http`, a WASI 0.3 server (GET /next
#     answers a 20-byte greeting), which makes modhost start its second, concurrent
#     engine.
# Per deployment and route: requests/s at 32 connections (median of the rounds), p50 at
# 1 connection, CPU per request; per deployment: start to ready (precompiled, median of
# 5), resident and virtual memory after the load. Prints a Markdown table.
#
# Usage: benches/wasi-lines.sh [DURATION] [ROUNDS]   (needs wrk; installs it if root)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/support/lib.sh
DURATION=${1:-10s}
ROUNDS=${2:-3}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }

rustup target add wasm32-wasip2 >/dev/null
cargo build --profile guest --target wasm32-wasip2 -p hello -p plainhttp -p wstdserver -p p3http
cargo build --release -p modhost --bin modhost
MODHOST=$PWD/target/release/modhost
WORK=$(mktemp -d)
PID=
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

for guest in hello plainhttp wstdserver p3http; do
  "$MODHOST" compile "target/wasm32-wasip2/guest/$guest.wasm" --out-dir "$WORK/cwasm" >/dev/null
done
deployment() { # FILE WITH_P3
  {
    echo '[app]'
    echo 'name = "wasi-lines"'
    echo '[gateway]'
    echo 'max_connections = 1000'
    third="wstd wstdserver /wstd"
    [ -z "$2" ] || third="next p3http /next"
    for module in "hello hello /hello" "plain plainhttp /plain" "$third"; do
      set -- $module
      echo "[modules.$1]"
      echo "component = \"$WORK/cwasm/$2.cwasm\""
      echo "routes = [\"$3\"]"
      echo 'limits = { memory = "16MiB", timeout = "2s", concurrency = 1000 }'
    done
  } > "$1"
}
deployment "$WORK/p2.toml" ""
deployment "$WORK/p3.toml" yes

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }  # utime + stime
start() { # FILE: starts modhost on it; its startup_ms in STARTUP (no subshell: PID is ours)
  rm -rf "$WORK/data"
  MODHOST_LOG=info "$MODHOST" --log-format json run "$1" --listen 127.0.0.1:18095 \
    --data-dir "$WORK/data" >"$WORK/log" 2>&1 &
  PID=$!
  for _ in $(seq 1 400); do grep -q '"modhost ready"' "$WORK/log" && break; sleep 0.025; done
  STARTUP=$(grep '"modhost ready"' "$WORK/log" | sed -E 's/.*"startup_ms":([0-9.]+).*/\1/')
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }

declare -A RPS ONE CPU READY RSS VSZ
measure() { # KEY ROUTE
  local url="http://127.0.0.1:18095$2" loaded single before after requests
  wrk -t1 -c32 -d3s "$url" >/dev/null
  before=$(cpu_ticks "$PID")
  loaded=$(wrk -t1 -c32 -d"$DURATION" --latency "$url")
  after=$(cpu_ticks "$PID")
  single=$(wrk -t1 -c1 -d5s --latency "$url")
  local errors
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$loaded$single")
  [ -z "$errors" ] || echo "WARNING $1: $errors" >&2
  requests=$(awk '/requests in/ {print $1}' <<<"$loaded")
  RPS[$1]+="$(awk '/Requests\/sec/ {print $2}' <<<"$loaded") "
  ONE[$1]+="$(awk '$1=="50%" {print $2}' <<<"$single") "
  CPU[$1]+="$(awk -v t=$(( after - before )) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
    'BEGIN { printf "%.2f", 1000000 * t / hz / n }') "
}

for round in $(seq 1 "$ROUNDS"); do
  for d in p2 p3; do
    start "$WORK/$d.toml"
    curl -sf "http://127.0.0.1:18095/hello" >/dev/null
    measure "$d hello" /hello
    measure "$d plain" /plain
    [ "$d" = p2 ] || measure "$d next" /next
    RSS[$d]+="$(awk '/VmRSS/ {print $2}' "/proc/$PID/status") "
    VSZ[$d]+="$(awk '/VmSize/ {print $2}' "/proc/$PID/status") "
    stop
  done
done
for d in p2 p3; do
  for _ in 1 2 3 4 5; do start "$WORK/$d.toml"; READY[$d]+="$STARTUP "; stop; done
done

ms() { # wrk's 1.23ms / 456.78us / 1.2s → ms
  awk -v t="$1" 'BEGIN { v=t+0; if (t ~ /us$/) v/=1000; else if (t ~ /ms$/) v=v; else if (t ~ /s$/) v*=1000; printf "%.3f", v }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
gib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1048576 }'; }

echo
echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /,""); print; exit}' /proc/cpuinfo), $(uname -sr); $(date -u +%F)"
echo "load: wrk -t1 -c32 -d$DURATION (after 3 s of warm-up) and -c1 -d5s; $ROUNDS rounds, deployments alternating; medians"
echo
echo "| route | deployment | requests/s, 32 connections | p50, 1 connection, ms | CPU per request, µs | rounds (requests/s) |"
echo "| --- | --- | ---: | ---: | ---: | --- |"
row() { # KEY ROUTE LABEL
  local one=()
  for t in ${ONE[$1]}; do one+=("$(ms "$t")"); done
  echo "| $2 | $3 | $(median "${RPS[$1]}") | $(median "${one[*]}") | $(median "${CPU[$1]}") | ${RPS[$1]}|"
}
row "p2 hello" "GET /hello (0.2, SDK)" "0.2 only"
row "p3 hello" "GET /hello (0.2, SDK)" "0.2 + 0.3"
row "p2 plain" "GET /plain (0.2, bare)" "0.2 only"
row "p3 plain" "GET /plain (0.2, bare)" "0.2 + 0.3"
row "p3 next" "GET /next (0.3)" "0.2 + 0.3"
echo
echo "- WASI 0.2 beside 0.3 / alone, requests/s: hello $(ratio "$(median "${RPS[p3 hello]}")" "$(median "${RPS[p2 hello]}")"), plain $(ratio "$(median "${RPS[p3 plain]}")" "$(median "${RPS[p2 plain]}")")"
echo "- WASI 0.3 / 0.2 greeting (next / plain, same run): requests/s $(ratio "$(median "${RPS[p3 next]}")" "$(median "${RPS[p3 plain]}")"), CPU per request $(ratio "$(median "${CPU[p3 next]}")" "$(median "${CPU[p3 plain]}")")"
echo "- start to ready, precompiled, ms (median of 5): 0.2 only $(median "${READY[p2]}"), 0.2 + 0.3 $(median "${READY[p3]}")"
echo "- resident memory after the load, MiB: 0.2 only $(mib "$(median "${RSS[p2]}")"), 0.2 + 0.3 $(mib "$(median "${RSS[p3]}")")"
echo "- virtual memory reserved, GiB: 0.2 only $(gib "$(median "${VSZ[p2]}")"), 0.2 + 0.3 $(gib "$(median "${VSZ[p3]}")")"
