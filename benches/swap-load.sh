#!/usr/bin/env bash
# Hot swap under load, on this machine: the `hello` module behind the gateway with wrk
# at 32 connections, first steady for DURATION, then for DURATION again while the
# admin API swaps `hello` back and forth between two versions every second (two
# components of the same code, differing by a custom section: the cost measured is
# the swap's, not a different module's). Reports requests/s and p50/p99 for both runs,
# every non-2xx answer (there must be none), and each swap's duration: staging
# (compile or compile-cache load, contract check, link, migrations) and the switch.
#
# Usage: benches/swap-load.sh [DURATION]   (needs wrk; installs it with apt if root)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/support/lib.sh
DURATION=${1:-10}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }
rustup target add wasm32-wasip2 >/dev/null
cargo build --profile guest --target wasm32-wasip2 -p hello
cargo build --release -p modhost --bin modhost

WORK=$(mktemp -d)
PID=
trap '[ -z "$PID" ] || kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
GATEWAY=127.0.0.1:$(free_port)
ADMIN=127.0.0.1:$(free_port)
TOKEN=bench-admin-token-0123456789
HELLO="$PWD/target/wasm32-wasip2/guest/hello.wasm"
# Two more versions of hello: the component plus a custom section.
for tag in a b; do
  python3 - "$HELLO" "$WORK/hello-$tag.wasm" "$tag" <<'PY'
import sys
src, dst, tag = sys.argv[1], sys.argv[2], sys.argv[3]
name = b"modhost-bench-version"
payload = bytes([len(name)]) + name + tag.encode()
open(dst, "wb").write(open(src, "rb").read() + bytes([0, len(payload)]) + payload)
PY
done
cat > "$WORK/swap.toml" <<TOML
[app]
name = "bench-swap"
data_dir = "$WORK/data"
[gateway]
listen = "$GATEWAY"
[admin]
listen = "$ADMIN"
token = "$TOKEN"
[modules.hello]
component = "$HELLO"
routes = ["/hello"]
limits = { concurrency = 1000 }
TOML
MODHOST_LOG=warn,modhost::module::swap=info ./target/release/modhost run "$WORK/swap.toml" 2>"$WORK/modhost.log" &
PID=$!
for _ in $(seq 1 200); do curl -sf -o /dev/null "http://$GATEWAY/readyz" && break; sleep 0.05; done
swap() {
  curl -sf -X POST -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"component\": \"$1\"}" "http://$ADMIN/v1/modules/hello/swap"
}
# Warm the compile cache with both versions (a first swap of a version compiles it).
swap "$WORK/hello-a.wasm" >/dev/null; swap "$WORK/hello-b.wasm" >/dev/null
wrk -t1 -c32 -d3s "http://$GATEWAY/hello" >/dev/null

summary() { # summary NAME WRK-OUTPUT
  local errors; errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$2")
  echo "$1|$(awk '/Requests\/sec/ {print $2}' <<<"$2")|$(awk '$1=="50%" {print $2}' <<<"$2")|$(awk '$1=="99%" {print $2}' <<<"$2")|${errors:-none}"
}
STEADY=$(wrk -t1 -c32 -d"${DURATION}s" --latency "http://$GATEWAY/hello")
wrk -t1 -c32 -d"${DURATION}s" --latency "http://$GATEWAY/hello" >"$WORK/during.txt" &
WRK=$!
: >"$WORK/swaps.txt"
for i in $(seq 1 $((DURATION - 1))); do
  sleep 1
  if [ $((i % 2)) = 1 ]; then next=a; else next=b; fi
  swap "$WORK/hello-$next.wasm" >>"$WORK/swaps.txt"; echo >>"$WORK/swaps.txt"
done
wait "$WRK"
DURING=$(cat "$WORK/during.txt")

echo
echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /,""); print; exit}' /proc/cpuinfo), $(uname -sr)"
echo "load: wrk -t1 -c32 -d${DURATION}s on GET /hello; $((DURATION - 1)) swaps during the second run"
echo
echo "| run | requests/s | p50 | p99 | non-2xx / socket errors |"
echo "| --- | ---: | ---: | ---: | --- |"
for row in "$(summary steady "$STEADY")" "$(summary 'swapping every second' "$DURING")"; do
  IFS='|' read -r name rps p50 p99 errors <<<"$row"
  echo "| $name | $rps | $p50 | $p99 | $errors |"
done
echo
python3 - "$WORK/swaps.txt" <<'PY'
import json, sys, statistics
rows = [json.loads(l)["nodes"]["local"] for l in open(sys.argv[1]) if l.strip()]
staged = [r["staged_ms"] for r in rows]; committed = [r["committed_us"] for r in rows]
print(f"swaps: {len(rows)}; staging (cache load, check, link) median {statistics.median(staged):.1f} ms, max {max(staged):.1f} ms; "
      f"commit (switch + durable record) median {statistics.median(committed):.0f} µs, max {max(committed):.0f} µs")
PY
python3 - "$WORK/modhost.log" <<'PY'
import re, sys, statistics
ns = [int(m.group(1)) for m in re.finditer(r"switch_ns=(\d+)", open(sys.argv[1]).read())]
if ns:
    print(f"the switch itself (atomic store, from the log): median {statistics.median(ns):.0f} ns, max {max(ns)} ns")
PY
