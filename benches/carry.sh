#!/usr/bin/env bash
# Carrying a module's SQLite file into Postgres at its node's start, on this machine:
# `users` with ROWS rows in its SQLite file (100,000 by default) is switched to a
# Postgres schema (a release node, a local Postgres cluster started as the tests start
# theirs) and its node started; the node carries the file over before the module
# serves (host/src/capabilities/sql/carry.rs). Reports, per run, the carry's own time
# (from its log line: rows written, read back and compared, in one transaction) and
# the node's start to ready; beside it, measured in the same run, the floor: psql's
# `\copy` of the same rows from CSV into a table of the same shape (no casts, no read
# back, no comparison). Each run carries into a fresh database from a fresh copy of
# the same file.
#
# Usage: benches/carry.sh [ROWS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-100000}
RUNS=${2:-3}
source benches/support/lib.sh
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
rustup target add wasm32-wasip2 >/dev/null
cargo build --profile guest --target wasm32-wasip2 -p users
cargo build --release -p modhost --bin modhost
MODHOST=$PWD/target/release/modhost

WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; postgres_stop; rm -rf "$WORK"' EXIT
source benches/postgres.sh
URL="postgres://admin:bench-password@127.0.0.1:$PGPORT/postgres"
PSQL() { PGPASSWORD=bench-password "$PGBIN/psql" -q -h 127.0.0.1 -p "$PGPORT" -U admin -d postgres "$@"; }
HTTP=127.0.0.1:$(free_port)

deployment() { # deployment FILE DATABASE
  cat >"$1" <<TOML
[app]
name = "bench-carry"
[gateway]
listen = "$HTTP"
[modules.users]
component = "$PWD/target/wasm32-wasip2/guest/users.wasm"
routes = ["/users"]
database = $2
migrations = "$PWD/modules/users/migrations"
TOML
}
start() { # start FILE DATA_DIR LOG; sets READY_MS: spawn to ready
  local began; began=$(date +%s%N)
  MODHOST_LOG=warn,modhost::capabilities::sql::carry=info "$MODHOST" run "$1" --data-dir "$2" 2>"$3" &
  PIDS=($!)
  for _ in $(seq 1 6000); do
    if curl -sf -o /dev/null "http://$HTTP/readyz"; then
      READY_MS=$(awk -v b="$began" -v e="$(date +%s%N)" 'BEGIN { printf "%.0f", (e - b) / 1e6 }')
      return
    fi
    sleep 0.01
  done
  echo "the node did not start:" >&2; cat "$3" >&2; exit 1
}
stop() { kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=(); }

# The module's file, made by its migrations on a first start, then filled.
deployment "$WORK/sqlite.toml" '"sqlite"'
start "$WORK/sqlite.toml" "$WORK/template" "$WORK/first.log"
stop
python3 - "$WORK/template/databases/users.sqlite" "$ROWS" "$WORK/users.csv" <<'PY'
import csv, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = int(sys.argv[2])
db.executemany("INSERT INTO users (id, name, email) VALUES (?, ?, ?)",
               ((1000 + i, f"Seeded user {i}", f"seeded{i}@example.com") for i in range(rows)))
db.commit()
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
with open(sys.argv[3], "w", newline="") as out:
    csv.writer(out).writerows(db.execute("SELECT id, name, email FROM users"))
PY
BYTES=$(stat -c %s "$WORK/template/databases/users.sqlite")

CARRY=(); READY=(); COPY=()
for run in $(seq 1 "$RUNS"); do
  rm -rf "$WORK/data"; cp -r "$WORK/template" "$WORK/data"
  # A database of its own per run (the host's schema of a module is one per database).
  PSQL -c "CREATE DATABASE carry_$run"
  deployment "$WORK/postgres.toml" "{ postgres = \"${URL%/postgres}/carry_$run\" }"
  start "$WORK/postgres.toml" "$WORK/data" "$WORK/run-$run.log"
  READY+=("$READY_MS")
  stop
  line=$(grep "carried over to postgres" "$WORK/run-$run.log") || { cat "$WORK/run-$run.log"; exit 1; }
  CARRY+=("$(sed -E 's/.*(ms=|"ms":)([0-9]+).*/\2/' <<<"$line")")
  # The floor: the same rows, from CSV, into a table of the same shape, by psql.
  PSQL -c "CREATE TABLE copy_$run (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL); \
           CREATE UNIQUE INDEX copy_${run}_email ON copy_$run (lower(email))"
  began=$(date +%s%N)
  PSQL -c "\\copy copy_$run (id, name, email) FROM '$WORK/users.csv' WITH (FORMAT csv)"
  COPY+=("$(awk -v b="$began" -v e="$(date +%s%N)" 'BEGIN { printf "%.0f", (e - b) / 1e6 }')")
done

carry=$(median "${CARRY[*]}"); copy=$(median "${COPY[*]}"); ready=$(median "${READY[*]}")
total=$((ROWS + 3))
echo "rows: $total in a SQLite file of $(mib $((BYTES / 1024))) MiB; runs: $RUNS"
echo "carry (ms, each run):            ${CARRY[*]}"
echo "start to ready (ms, each run):   ${READY[*]}"
echo "psql \\copy from CSV (ms, each): ${COPY[*]}"
awk -v n="$total" -v c="$carry" -v p="$copy" -v r="$ready" 'BEGIN {
  printf "median: carry %d ms (%.0f rows/s), ready %d ms; \\copy %d ms (%.0f rows/s); carry / \\copy = %.1fx\n",
    c, n / (c / 1000), r, p, n / (p / 1000), c / p }'
