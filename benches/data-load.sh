#!/usr/bin/env bash
# Queries through a module, per backend, on this machine: the `users` module serving
# `GET /users/2` (a point read by primary key) and `POST /users` (an insert), with its
# database on SQLite and on Postgres (a cluster this script starts from the installed
# server binaries, as the tests do). Each request is one fresh instance of `users`
# and one statement (the insert: one `INSERT … SELECT MAX(id)+1 … RETURNING`).
# Load: wrk, 1 thread, 32 connections, DURATION after a 3 s warm-up. Every answer must
# be 200/201; any other is reported.
#
# Usage: benches/data-load.sh [DURATION]   (needs wrk and the postgresql package)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }
rustup target add wasm32-wasip2 >/dev/null
cargo build --profile guest --target wasm32-wasip2 -p users
cargo build --release -p modhost --bin modhost

WORK=$(mktemp -d); chmod 755 "$WORK"   # the postgres user must reach its cluster dir
PID=
cleanup() {
  [ -z "$PID" ] || kill "$PID" 2>/dev/null || true
  postgres_stop
  rm -rf "$WORK"
}
trap cleanup EXIT

# A Postgres cluster on a free port, password auth over TCP.
source benches/postgres.sh
PGPASSWORD=bench-password "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U admin shop

deployment() { # deployment NAME DATABASE
  cat > "$WORK/$1.toml" <<TOML
[app]
name = "bench-$1"
data_dir = "$WORK/data-$1"
[gateway]
listen = "127.0.0.1:18095"
[modules.users]
component = "$PWD/target/wasm32-wasip2/guest/users.wasm"
routes = ["/users"]
migrations = "$PWD/modules/users/migrations"
database = $2
limits = { concurrency = 256 }
TOML
}
deployment sqlite '"sqlite"'
deployment postgres "{ postgres = \"postgres://admin:bench-password@127.0.0.1:$PGPORT/shop\", pool = 16 }"

# measure NAME ARGS…: prints "rps|p50|p99"
measure() {
  local out; out=$(wrk -t1 -c32 -d"$DURATION" --latency "$@")
  local errors; errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
  [ -z "$errors" ] || echo "WARNING: $errors" >&2
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out")|$(awk '$1=="50%" {print $2}' <<<"$out")|$(awk '$1=="99%" {print $2}' <<<"$out")"
}

ROWS=()
for backend in sqlite postgres; do
  MODHOST_LOG=warn ./target/release/modhost run "$WORK/$backend.toml" 2>"$WORK/$backend.log" &
  PID=$!
  for _ in $(seq 1 200); do curl -sf -o /dev/null http://127.0.0.1:18095/readyz && break; sleep 0.05; done
  wrk -t1 -c32 -d3s http://127.0.0.1:18095/users/2 >/dev/null
  ROWS+=("$backend|point read (GET /users/2)|$(measure http://127.0.0.1:18095/users/2)")
  ROWS+=("$backend|insert (POST /users)|$(measure -s benches/new-user.lua http://127.0.0.1:18095/users)")
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
done

echo
echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /,""); print; exit}' /proc/cpuinfo), $(uname -sr); $("$PGBIN/postgres" --version)"
echo "load: wrk -t1 -c32 -d$DURATION"
echo
echo "| backend | statement | queries/s | p50 | p99 |"
echo "| --- | --- | ---: | ---: | ---: |"
for row in "${ROWS[@]}"; do
  IFS='|' read -r backend what rps p50 p99 <<<"$row"
  echo "| $backend | $what | $rps | $p50 | $p99 |"
done
