#!/usr/bin/env bash
# Same-run comparison of modhost builds on the `users` module's queries (the
# workload of benches/data-load.sh): for ROUNDS rounds, each build in turn serves
# `GET /users/2` (a point read) and `POST /users` (an insert) for DURATION, on
# SQLite and on Postgres (one cluster this script starts, a database per build).
# Each build is given as NAME=MODHOST_BINARY,USERS_WASM (each build with the users
# module of its own tree), each run on a fresh database. Prints one line per
# measurement; the insert figure counts
# answered creations only (201), as concurrent inserts through `MAX(id)+1` collide
# and the module answers 503 after five tries.
#
# Usage: benches/data-pairs.sh ROUNDS DURATION NAME=BIN,WASM [NAME=BIN,WASM…]
# e.g.   benches/data-pairs.sh 5 5s base=/tmp/base/modhost,/tmp/base/users.wasm \
#          head=target/release/modhost,target/wasm32-wasip2/guest/users.wasm
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n 2,14p "$0"; exit 2; }
ROUNDS=$1; DURATION=$2; shift 2
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }
WORK=$(mktemp -d); chmod 755 "$WORK"   # the postgres user must reach its cluster dir
PID=
cleanup() {
  [ -z "$PID" ] || kill "$PID" 2>/dev/null || true
  postgres_stop
  rm -rf "$WORK"
}
trap cleanup EXIT

source benches/postgres.sh

# ok_rate ARGS…: answers in 2xx per second over DURATION.
ok_rate() {
  local out; out=$(wrk -t1 -c32 -d"$DURATION" "$@")
  awk '/requests in/ {n=$1; t=$4; sub(/s,?$/,"",t)} /Non-2xx/ {bad=$5}
       END {printf "%.0f", (n-bad)/t}' <<<"$out"
}

for round in $(seq 1 "$ROUNDS"); do
  for backend in sqlite postgres; do
    for build in "$@"; do
      name=${build%%=*}; rest=${build#*=}; bin=${rest%%,*}; wasm=${rest#*,}
      # Every run starts from the migrations' three users: a fresh file, a fresh
      # database (wrk's script makes the same emails each run).
      database='"sqlite"'
      if [ "$backend" = postgres ]; then
        PGPASSWORD=bench-password "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U admin "db_${name}_$round"
        database="{ postgres = \"postgres://admin:bench-password@127.0.0.1:$PGPORT/db_${name}_$round\", pool = 16 }"
      fi
      cat > "$WORK/$name.toml" <<TOML
[app]
name = "bench-$name"
data_dir = "$WORK/data-$name-$round"
[gateway]
listen = "127.0.0.1:18095"
[modules.users]
component = "$(realpath "$wasm")"
routes = ["/users"]
migrations = "$PWD/modules/users/migrations"
database = $database
limits = { concurrency = 256 }
TOML
      MODHOST_LOG=warn "$bin" run "$WORK/$name.toml" 2>"$WORK/$name.log" &
      PID=$!
      for _ in $(seq 1 200); do curl -sf -o /dev/null http://127.0.0.1:18095/readyz && break; sleep 0.05; done
      wrk -t1 -c32 -d2s http://127.0.0.1:18095/users/2 >/dev/null
      read=$(ok_rate http://127.0.0.1:18095/users/2)
      insert=$(ok_rate -s benches/new-user.lua http://127.0.0.1:18095/users)
      kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
      echo "round $round $backend $name: point reads/s $read, inserts/s $insert"
    done
  done
done
echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /,""); print; exit}' /proc/cpuinfo), $(uname -sr); $("$PGBIN/postgres" --version)"
