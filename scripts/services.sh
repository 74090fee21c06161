#!/usr/bin/env bash
# Starts and stops the local services the demo and the tests use: a throwaway Postgres
# cluster and an S3 server (SeaweedFS), both on loopback only, their data under .run/.
# Idempotent, and safe as root (Postgres then runs as the `postgres` user).
#
#   scripts/services.sh up | down | status | env
#
# Ports and credentials come from the environment, with local defaults:
#   ETL_PG_PORT (54329)  ETL_PG_USER (etl)  ETL_PG_PASSWORD (etl-local)  ETL_PG_DB (acme)
#   ETL_S3_PORT (8333)   ETL_S3_ACCESS_KEY (etl-local)  ETL_S3_SECRET_KEY (etl-local-secret)
#   ETL_S3_BUCKET (acme)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="${ETL_RUN_DIR:-$root/.run}"
weed="$root/.tools/bin/weed"

PG_PORT="${ETL_PG_PORT:-54329}"
PG_USER="${ETL_PG_USER:-etl}"
PG_PASSWORD="${ETL_PG_PASSWORD:-etl-local}"
PG_DB="${ETL_PG_DB:-acme}"
S3_PORT="${ETL_S3_PORT:-8333}"
S3_ACCESS_KEY="${ETL_S3_ACCESS_KEY:-etl-local}"
S3_SECRET_KEY="${ETL_S3_SECRET_KEY:-etl-local-secret}"
S3_BUCKET="${ETL_S3_BUCKET:-acme}"

pgdata="$run/pg/data"
pgsock="$run/pg/sock"
say() { printf 'services: %s\n' "$*"; }

# Run a Postgres server binary as its own user when we are root (initdb refuses root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_bin() {
  local b
  for b in "$(command -v "$1" 2>/dev/null)" /usr/lib/postgresql/*/bin/"$1"; do
    [ -x "$b" ] && { echo "$b"; return; }
  done
  echo "services: $1 not found: install the PostgreSQL server (apt-get install postgresql)" >&2
  exit 1
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pg_up() {
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    say "creating Postgres cluster in $pgdata"
    mkdir -p "$pgdata" "$pgsock"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$run/pg"
    chmod 700 "$pgdata"
    pwfile="$(mktemp)"; printf '%s\n' "$PG_PASSWORD" >"$pwfile"
    [ "$(id -u)" = 0 ] && chown postgres "$pwfile"
    as_pg "$(pg_bin initdb)" -D "$pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 >"$run/pg/initdb.log" 2>&1 \
      || { rm -f "$pwfile"; cat "$run/pg/initdb.log" >&2; exit 1; }
    rm -f "$pwfile"
  fi
  if as_pg "$(pg_bin pg_ctl)" -D "$pgdata" status >/dev/null 2>&1; then
    say "Postgres already running on 127.0.0.1:$PG_PORT"
  else
    as_pg "$(pg_bin pg_ctl)" -D "$pgdata" -l "$run/pg/server.log" -w -t 60 start \
      -o "-p $PG_PORT -k $pgsock -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null \
      || { tail -n 20 "$run/pg/server.log" >&2; exit 1; }
    say "Postgres started on 127.0.0.1:$PG_PORT (log: $run/pg/server.log)"
  fi
  # The pipeline's login role and database; the role may create databases for tests.
  as_pg psql -qAt -h "$pgsock" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -v user="$PG_USER" -v pw="$PG_PASSWORD" -v db="$PG_DB" <<'SQL' >/dev/null
select format('create role %I login createdb password %L', :'user', :'pw')
 where not exists (select from pg_roles where rolname = :'user') \gexec
select format('alter role %I password %L', :'user', :'pw') \gexec
select format('create database %I owner %I', :'db', :'user')
 where not exists (select from pg_database where datname = :'db') \gexec
SQL
}

pg_down() {
  if [ -f "$pgdata/PG_VERSION" ] && as_pg "$(pg_bin pg_ctl)" -D "$pgdata" status >/dev/null 2>&1; then
    as_pg "$(pg_bin pg_ctl)" -D "$pgdata" -m fast -w stop >/dev/null
    say "Postgres stopped"
  else
    say "Postgres not running"
  fi
}

s3_pid() { [ -f "$run/s3/weed.pid" ] && kill -0 "$(cat "$run/s3/weed.pid")" 2>/dev/null && cat "$run/s3/weed.pid"; }

s3_up() {
  [ -x "$weed" ] || { echo "services: $weed missing: run 'just setup' first" >&2; exit 1; }
  if s3_pid >/dev/null; then
    say "S3 server already running on 127.0.0.1:$S3_PORT"
    return
  fi
  if port_open "$S3_PORT"; then
    echo "services: port $S3_PORT is taken by another process: set ETL_S3_PORT" >&2
    exit 1
  fi
  mkdir -p "$run/s3/data"
  AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" \
    setsid "$weed" mini -dir="$run/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$S3_PORT" -bucket="$S3_BUCKET" -admin.ui=false \
    -volume.max="${ETL_S3_MAX_VOLUMES:-2000}" -master.volumeSizeLimitMB=64 \
    >"$run/s3/weed.log" 2>&1 </dev/null &
  echo $! >"$run/s3/weed.pid"
  for _ in $(seq 1 120); do
    # Anonymous requests are refused, so "answers HTTP" is the readiness signal; the seeder
    # makes sure the bucket exists with the real keys.
    if port_open "$S3_PORT" && curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"; then
      say "S3 server started on 127.0.0.1:$S3_PORT, bucket '$S3_BUCKET' (log: $run/s3/weed.log)"
      return
    fi
    kill -0 "$(cat "$run/s3/weed.pid")" 2>/dev/null || break
    sleep 0.5
  done
  echo "services: the S3 server did not come up; last lines of $run/s3/weed.log:" >&2
  tail -n 20 "$run/s3/weed.log" >&2
  exit 1
}

s3_down() {
  local pid
  if pid="$(s3_pid)"; then
    kill -- "-$pid" 2>/dev/null || kill "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 -- "-$pid" 2>/dev/null || true
    rm -f "$run/s3/weed.pid"
    say "S3 server stopped"
  else
    say "S3 server not running"
  fi
}

case "${1:-}" in
  up) mkdir -p "$run"; pg_up; s3_up ;;
  down) s3_down; pg_down ;;
  status)
    as_pg "$(pg_bin pg_ctl)" -D "$pgdata" status >/dev/null 2>&1 && say "Postgres: running on 127.0.0.1:$PG_PORT" || say "Postgres: stopped"
    s3_pid >/dev/null && say "S3: running on 127.0.0.1:$S3_PORT" || say "S3: stopped" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
