#!/usr/bin/env bash
# The price of a module's language, in one run: the same module in Rust, Python and
# JavaScript — `modhost new`'s notes module in each (GET /NAME reads its SQLite table
# and answers JSON; the same SQL, the same answer) — each served alone by a release
# modhost.
#
# Measured per language: component size, compile time, start to ready with the module
# precompiled (median of 5), the first request after start, latency at 1 connection,
# throughput and tail at 32 connections, resident memory idle and at peak.
# Prints a Markdown table for BENCHMARKS.md.
#
# Usage: benches/languages.sh [DURATION]   (needs wrk; installs it with apt if root)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/support/lib.sh
DURATION=${1:-10s}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }

REPO=$PWD
export CARGO_TARGET_DIR="$REPO/target"
cargo build --release -p modhost --bin modhost
MODHOST="$REPO/target/release/modhost"
APP=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$APP"; }
trap cleanup EXIT

# A new application with the two modules, as a team would start it.
mkdir -p "$APP/modules" "$APP/config" "$APP/cwasm"
cp -r wit "$APP/"
cp -r modules/sdk modules/sdk-python modules/sdk-js "$APP/modules/"
cp Cargo.lock "$APP/"
cat > "$APP/Cargo.toml" <<'TOML'
[workspace]
resolver = "2"
members = ["modules/sdk"]
[workspace.package]
edition = "2021"
license = "Apache-2.0"
[profile.guest]
inherits = "release"
opt-level = "s"
debug = false
strip = true
TOML
(cd "$APP" && "$MODHOST" new bench-rust >/dev/null && "$MODHOST" new bench-python --lang python >/dev/null \
  && "$MODHOST" new bench-javascript --lang javascript >/dev/null)

declare -A WASM=(
  [rust]="$CARGO_TARGET_DIR/wasm32-wasip2/guest/bench_rust.wasm"
  [python]="$CARGO_TARGET_DIR/python/bench-python.wasm"
  [javascript]="$CARGO_TARGET_DIR/javascript/bench-javascript.wasm"
)
LANGS=(rust python javascript)
deployment() { # LANG COMPONENT FILE
  cat > "$3" <<TOML
[app]
name = "bench"
[gateway]
max_connections = 1000
[modules.bench-$1]
component = "$2"
routes = ["/bench-$1"]
database = "sqlite"
migrations = "$APP/modules/bench-$1/migrations"
limits = { memory = "64MiB", timeout = "5s", concurrency = 256 }
TOML
}

declare -A SIZE COMPILE READY FIRST P50ONE RPS P50 P99 IDLE PEAK CPU
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }  # utime + stime
for lang in "${LANGS[@]}"; do
  deployment "$lang" "$APP/modules/bench-$lang" "$APP/config/$lang.toml"
  (cd "$APP" && "$MODHOST" build "config/$lang.toml" >/dev/null 2>&1)
  SIZE[$lang]=$(stat -c %s "${WASM[$lang]}")
  start=$(date +%s%N)
  "$MODHOST" compile "${WASM[$lang]}" --out-dir "$APP/cwasm" >/dev/null
  COMPILE[$lang]=$(( ($(date +%s%N) - start) / 1000000 ))
  cwasm="$APP/cwasm/$(basename "${WASM[$lang]}" .wasm).cwasm"
  deployment "$lang" "$cwasm" "$APP/config/$lang-precompiled.toml"

  # Start to ready, precompiled: the node's own startup_ms, median of 5 fresh starts.
  readies=()
  for run in 1 2 3 4 5; do
    rm -rf "$APP/data"
    log="$APP/start-$lang-$run.log"
    MODHOST_LOG=info "$MODHOST" --log-format json run "$APP/config/$lang-precompiled.toml" \
      --listen 127.0.0.1:18090 --data-dir "$APP/data" 2>"$log" &
    pid=$!
    for _ in $(seq 1 400); do grep -q '"modhost ready"' "$log" && break; sleep 0.025; done
    readies+=("$(grep '"modhost ready"' "$log" | sed -E 's/.*"startup_ms":([0-9.]+).*/\1/')")
    if [ "$run" = 5 ]; then
      # The first request after start: its instance, its database connection.
      FIRST[$lang]=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:18090/bench-$lang")
      IDLE[$lang]=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
      for i in $(seq 1 20); do
        curl -sf -o /dev/null -XPOST "http://127.0.0.1:18090/bench-$lang" -d "{\"text\": \"note $i\"}"
      done
      url="http://127.0.0.1:18090/bench-$lang"
      wrk -t1 -c32 -d3s "$url" >/dev/null
      cpu_before=$(cpu_ticks "$pid")
      loaded=$(wrk -t1 -c32 -d"$DURATION" --latency "$url")
      cpu_after=$(cpu_ticks "$pid")
      requests=$(awk '/requests in/ {print $1}' <<<"$loaded")
      CPU[$lang]=$(awk -v t=$(( cpu_after - cpu_before )) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
        'BEGIN { printf "%.3f", 1000 * t / hz / n }')
      single=$(wrk -t1 -c1 -d5s --latency "$url")
      RPS[$lang]=$(awk '/Requests\/sec/ {print $2}' <<<"$loaded")
      P50[$lang]=$(awk '$1=="50%" {print $2}' <<<"$loaded")
      P99[$lang]=$(awk '$1=="99%" {print $2}' <<<"$loaded")
      P50ONE[$lang]=$(awk '$1=="50%" {print $2}' <<<"$single")
      errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$loaded$single")
      [ -z "$errors" ] || echo "WARNING $lang: $errors" >&2
      PEAK[$lang]=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
  READY[$lang]=$(printf '%s\n' "${readies[@]}" | sort -n | sed -n 3p | awk '{ printf "%.1f", $1 }')
done

echo
echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /,""); print; exit}' /proc/cpuinfo), $(uname -sr); $(date -u +%F)"
echo "module: modhost new's notes module, GET /NAME over 20 rows; wrk -t1 -c32 -d$DURATION, wrk -t1 -c1 -d5s"
echo
ratio() { awk -v p="$1" -v r="$2" 'BEGIN { if (r+0 == 0) print "-"; else printf "%.2gx", p/r }'; }
ms() { # wrk's 1.23ms / 456.78us / 1.2s → milliseconds
  awk -v t="$1" 'BEGIN { v=t+0; if (t ~ /us$/) v/=1000; else if (t ~ /ms$/) v=v; else if (t ~ /s$/) v*=1000; printf "%.2f", v }'
}
echo "| | Rust | Python | JavaScript | Python / Rust | JavaScript / Rust |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
row() { echo "| $1 | $2 | $3 | $4 | $(ratio "$3" "$2") | $(ratio "$4" "$2") |"; }
r3() { row "$1" "$2" "$3" "$4"; }
size() { mib $(( SIZE[$1] / 1024 )); }
r3 "component (.wasm), MiB" "$(size rust)" "$(size python)" "$(size javascript)"
r3 "compile (\`modhost compile\`), ms" "${COMPILE[rust]}" "${COMPILE[python]}" "${COMPILE[javascript]}"
r3 "start to ready, precompiled, ms (median of 5)" "${READY[rust]}" "${READY[python]}" "${READY[javascript]}"
first() { awk -v s="${FIRST[$1]}" 'BEGIN{printf "%.2f", s*1000}'; }
r3 "first request after start, ms" "$(first rust)" "$(first python)" "$(first javascript)"
r3 "GET p50 at 1 connection, ms" "$(ms "${P50ONE[rust]}")" "$(ms "${P50ONE[python]}")" "$(ms "${P50ONE[javascript]}")"
r3 "GET requests/s at 32 connections" "${RPS[rust]}" "${RPS[python]}" "${RPS[javascript]}"
r3 "CPU per request at 32 connections, ms (host + module)" "${CPU[rust]}" "${CPU[python]}" "${CPU[javascript]}"
r3 "GET p50 at 32 connections, ms" "$(ms "${P50[rust]}")" "$(ms "${P50[python]}")" "$(ms "${P50[javascript]}")"
r3 "GET p99 at 32 connections, ms" "$(ms "${P99[rust]}")" "$(ms "${P99[python]}")" "$(ms "${P99[javascript]}")"
r3 "resident memory after the first request, MiB" "$(mib "${IDLE[rust]}")" "$(mib "${IDLE[python]}")" "$(mib "${IDLE[javascript]}")"
r3 "resident memory at peak (32 connections), MiB" "$(mib "${PEAK[rust]}")" "$(mib "${PEAK[python]}")" "$(mib "${PEAK[javascript]}")"
per() { mib $(( (PEAK[$1] - IDLE[$1]) / 32 )); }
r3 "(peak - after first request) / 32, MiB per request in flight" "$(per rust)" "$(per python)" "$(per javascript)"
