# A Postgres cluster for the benches, started from the installed server binaries as
# the tests start theirs: in $WORK/pg (WORK must be readable by the postgres user),
# on a free port, password auth over TCP, administrator `admin`/`bench-password`.
# Sourced by data-load.sh and data-pairs.sh: sets PGBIN and PGPORT, starts the
# cluster; `postgres_stop` stops it.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
postgres_stop() { as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true; }
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/pg"; echo bench-password > "$WORK/pg/pwfile"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$WORK/pg"
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U admin --pwfile="$WORK/pg/pwfile" \
  --auth-host=scram-sha-256 --auth-local=trust -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
  -o "-p $PGPORT -c listen_addresses=127.0.0.1 -k $WORK/pg" start >/dev/null
