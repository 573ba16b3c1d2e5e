#!/usr/bin/env bash
# Extracting a module with its data, on this machine: `users` with ROWS rows in its
# SQLite file (100,000 by default) moves from node a to node b (two release nodes,
# mutual TLS on loopback) while wrk creates users through a's gateway at 4
# connections. The same load runs first without an extraction (the baseline), for
# the same time. Reports the extraction's own figures (bytes copied and the copy
# rate while serving, the last changes' bytes, how long the module's work was held),
# the rows compared, and each run's requests/s, p99 and slowest request, with every
# non-2xx answer (there must be none). Each of RUNS extractions moves the module one
# way, then back.
#
# With TO_POSTGRES=1, the first move takes the module onto Postgres (`--to-postgres`, a
# local Postgres cluster started as the tests start theirs): its file is copied as
# before, then carried into the schema while its work is held; the later moves need
# no copy. Each move's figures are listed.
#
# Usage: [TO_POSTGRES=1] benches/extract.sh [ROWS] [RUNS]   (needs wrk; installs it
# with apt if root)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-100000}
RUNS=${2:-3}
source benches/support/lib.sh
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }
rustup target add wasm32-wasip2 >/dev/null
cargo build --profile guest --target wasm32-wasip2 -p users
cargo build --release -p modhost --bin modhost
MODHOST=$PWD/target/release/modhost

WORK=$(mktemp -d)
PIDS=()
TO_POSTGRES=${TO_POSTGRES:-}
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -z "$TO_POSTGRES" ] || postgres_stop; rm -rf "$WORK"' EXIT
if [ -n "$TO_POSTGRES" ]; then
  chmod 755 "$WORK"
  source benches/postgres.sh
  URL="postgres://admin:bench-password@127.0.0.1:$PGPORT/postgres"
fi
TOKEN=bench-admin-token-0123456789
declare -A HTTP MESH ADMIN
for node in a b; do
  HTTP[$node]=127.0.0.1:$(free_port); MESH[$node]=127.0.0.1:$(free_port); ADMIN[$node]=127.0.0.1:$(free_port)
done
cat > "$WORK/extract.toml" <<TOML
[app]
name = "bench-extract"
[modules.users]
component = "$PWD/target/wasm32-wasip2/guest/users.wasm"
routes = ["/users"]
database = "sqlite"
migrations = "$PWD/modules/users/migrations"
limits = { concurrency = 256 }
[admin]
token = "$TOKEN"
[nodes.a]
listen = "${HTTP[a]}"
mesh = "${MESH[a]}"
admin = "${ADMIN[a]}"
[nodes.b]
listen = "${HTTP[b]}"
mesh = "${MESH[b]}"
admin = "${ADMIN[b]}"
[placement]
users = ["a"]
[mesh]
ca = "certs/ca.pem"
cert = "certs/{node}.pem"
key = "certs/{node}.key"
TOML
"$MODHOST" certs "$WORK/extract.toml" >/dev/null

start() { # start NODE
  MODHOST_LOG=warn,modhost::admin=info,modhost::module::extraction=info \
    "$MODHOST" run "$WORK/extract.toml" --node "$1" --data-dir "$WORK/data-$1" 2>>"$WORK/$1.log" &
  PIDS+=($!)
  for _ in $(seq 1 400); do curl -sf -o /dev/null "http://${HTTP[$1]}/readyz" && return; sleep 0.05; done
  echo "node $1 did not start:"; cat "$WORK/$1.log"; exit 1
}

# The module's file, made by its migrations on a first start, then filled.
start a
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()
python3 - "$WORK/data-a/databases/users.sqlite" "$ROWS" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = int(sys.argv[2])
db.executemany("INSERT INTO users (id, name, email) VALUES (?, ?, ?)",
               ((1000 + i, f"Seeded user {i}", f"seeded{i}@example.com") for i in range(rows)))
db.commit()
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
PY
BYTES=$(stat -c %s "$WORK/data-a/databases/users.sqlite")
start a
start b

# A new user per request, with an address no other run uses (wrk seeds its random
# numbers the same way every run: the run's tag keeps the addresses apart).
cat > "$WORK/new-user.lua" <<'LUA'
local n, tag = 0, "run"
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
function init(args) tag = args[1] or tag end
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil,
    string.format('{"name": "Load %d", "email": "%s-%d@example.com"}', n, tag, n))
end
LUA
wrk_run() { # wrk_run NODE SECONDS OUT TAG
  wrk -t1 -c4 -d"$2s" --latency -s "$WORK/new-user.lua" "http://${HTTP[$1]}/users" -- "$4" >"$3"
}
summary() { # summary FILE → rps|p99|max|errors
  local errors; errors=$(awk '/Non-2xx|Socket errors/ {print}' "$1")
  echo "$(awk '/Requests\/sec/ {print $2}' "$1")|$(awk '$1=="99%" {print $2}' "$1")|$(awk '$1=="Latency" {print $4}' "$1")|${errors:-none}"
}
extract() { # extract MODULE-NODE TO OUT [ONTO-POSTGRES]
  local onto=(); [ -z "${4:-}" ] || onto=(--to-postgres "$URL")
  "$MODHOST" extract users --to "$2" "${onto[@]}" --admin "http://${ADMIN[$1]}" --token "$TOKEN" >"$3"
}

from=a; to=b
: >"$WORK/reports"
for run in $(seq 1 "$RUNS"); do
  wrk_run "$from" 4 "$WORK/base-$run.txt" "base$run"
  wrk_run "$from" 4 "$WORK/during-$run.txt" "during$run" &
  WRK=$!
  sleep 1.5
  extract "$from" "$to" "$WORK/report-$run.json" "$([ -n "$TO_POSTGRES" ] && [ "$run" = 1 ] && echo onto)"
  wait "$WRK"
  python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$WORK/report-$run.json" >>"$WORK/reports"
  tmp=$from; from=$to; to=$tmp
done

echo
echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /,""); print; exit}' /proc/cpuinfo), $(uname -sr)"
echo "module: users, $ROWS seeded rows, a $(mib $((BYTES / 1024))) MiB SQLite file; load: wrk -t1 -c4 POST /users (a new user each), 4 s per run"
echo
python3 - "$WORK/reports" <<'PY'
import json, statistics, sys
reports = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
med = lambda key: statistics.median(r[key] for r in reports)
print(f"extractions: {len(reports)} (a→b, b→a, …); median of each:")
print(f"- copied while serving: {med('copied_bytes') / 2**20:.1f} MiB in {med('copy_ms'):.0f} ms "
      f"({med('copy_mib_per_s'):.0f} MiB/s over the mesh)")
print(f"- last changes, sent while held: {med('last_changes_bytes') / 2**10:.0f} KiB")
print(f"- the module's work held: {med('held_ms'):.1f} ms (max {max(r['held_ms'] for r in reports):.1f} ms)")
print(f"- rows compared on both nodes: {statistics.median(r['rows'].get('users', 0) for r in reports):.0f} users")
print()
print("| move | database | copied | held | rows |")
print("| --- | --- | ---: | ---: | ---: |")
for n, r in enumerate(reports, 1):
    print(f"| {n}: {r['from']}→{r['to']} | {r['database']} | {r['copied_bytes'] / 2**20:.1f} MiB in {r['copy_ms']:.0f} ms "
          f"| {r['held_ms']:.1f} ms | {r['rows'].get('users', '-')} |")
PY
echo
echo "| run | requests/s | p99 | slowest | non-2xx / socket errors |"
echo "| --- | ---: | ---: | ---: | --- |"
for run in $(seq 1 "$RUNS"); do
  for kind in base during; do
    IFS='|' read -r rps p99 max errors <<<"$(summary "$WORK/$kind-$run.txt")"
    label=$([ "$kind" = base ] && echo "$run: steady" || echo "$run: extracting")
    echo "| $label | $rps | $p99 | $max | $errors |"
  done
done
