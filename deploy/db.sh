#!/bin/bash
# The development Postgres: a cluster of its own under var/, owned by the postgres user and
# listening on loopback only, with a `hotline` database migrated to the current schema.
set -euo pipefail

usage() {
    cat <<'EOF2'
Usage: deploy/db.sh {start|stop|status|psql}

  start   create the cluster on first use, start it, create and migrate the hotline database
  stop    stop the cluster (its data is kept)
  status  say whether it runs
  psql    open psql on the hotline database

Environment (defaults in brackets):
  HOTLINE_DB_DIR    cluster directory          [var/pg-dev in the repository]
  HOTLINE_DB_PORT   port on 127.0.0.1          [5433]

Authentication is "trust" on loopback: a development cluster, never a production one.
EOF2
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${HOTLINE_DB_DIR:-$REPO/var/pg-dev}
PORT=${HOTLINE_DB_PORT:-5433}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)

say() { echo "db: $*" >&2; }
die() { say "error: $*"; exit 1; }
as_pg() { runuser -u postgres -- "$@"; }

[ -n "$BIN" ] || die "PostgreSQL server binaries not found (apt-get install postgresql)"
[ "$(id -u)" -eq 0 ] || die "must run as root (the cluster runs as the postgres user)"

running() { as_pg "$BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; }

start() {
    if [ ! -f "$DIR/PG_VERSION" ]; then
        say "creating a cluster in $DIR"
        mkdir -p "$DIR"
        chown postgres:postgres "$DIR"
        chmod 700 "$DIR"
        as_pg "$BIN/initdb" -D "$DIR" -U postgres -A trust --no-instructions >/dev/null
    fi
    if ! running; then
        as_pg "$BIN/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w -t 60 \
            -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1" start >/dev/null
    fi
    if ! as_pg "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'hotline'" | grep -q 1; then
        as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres hotline
    fi
    say "running on 127.0.0.1:$PORT, database hotline"
}

case "${1:-}" in
start) start ;;
stop) running && as_pg "$BIN/pg_ctl" -D "$DIR" -m fast -w stop >/dev/null; say "stopped" ;;
status) running && echo "running on 127.0.0.1:$PORT" || { echo "not running"; exit 3; } ;;
psql) exec runuser -u postgres -- "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres hotline ;;
-h | --help | help) usage ;;
*) usage >&2; exit 2 ;;
esac
