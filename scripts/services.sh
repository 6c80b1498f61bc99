#!/usr/bin/env bash
# services.sh — make sure the PostgreSQL and Redis that firehose needs are running.
#
#   scripts/services.sh ensure        start them if installed; install them from Debian's
#                                     packages if absent and running as root; otherwise say
#                                     exactly what to install
#   scripts/services.sh createdb NAME create database NAME if it does not exist
#
# Where: PGHOST/PGPORT (default 127.0.0.1:5432), REDIS_HOST/REDIS_PORT (default
# 127.0.0.1:6379). Only local servers are started or installed; a remote one that does
# not answer is reported, never touched.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
export PGHOST PGPORT

say() { printf 'services: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
is_local() { case "$1" in 127.0.0.1|localhost|::1) return 0 ;; esac; return 1; }

pg_up() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$PGHOST" -p "$PGPORT" -t 2
  else
    (exec 3<>"/dev/tcp/$PGHOST/$PGPORT") 2>/dev/null
  fi
}

redis_up() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
  else
    (exec 3<>"/dev/tcp/$REDIS_HOST/$REDIS_PORT") 2>/dev/null
  fi
}

wait_for() { # wait_for NAME CHECK
  for _ in $(seq 1 50); do "$2" && return 0; sleep 0.2; done
  die "$1 did not come up on its port within 10s"
}

apt_install() {
  say "installing $* from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; } \
    || die "apt-get install $* failed"
}

# A fresh Debian PostgreSQL accepts TCP connections only with a password and knows no
# role but postgres. For a development machine, let local TCP connections in without
# one (as the default URL postgres://localhost:5432/firehose expects) and give the
# current user a role.
configure_fresh_postgres() {
  local hba
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf 2>/dev/null | head -n 1)
  if [ -n "$hba" ] && ! grep -q '^# firehose: trust local TCP' "$hba"; then
    say "allowing local TCP connections without a password in $hba (development set-up)"
    { echo '# firehose: trust local TCP (scripts/services.sh, development set-up)'
      echo 'host all all 127.0.0.1/32 trust'
      echo 'host all all ::1/128 trust'
      cat "$hba"; } >"$hba.new" && mv "$hba.new" "$hba"
    chown postgres:postgres "$hba"
  fi
}

start_postgres() {
  local ver
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$ver" ] || return 1
  say "starting PostgreSQL $ver"
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || pg_ctlcluster "$ver" main start
  else
    service postgresql start
  fi
}

ensure_postgres() {
  pg_up && return 0
  is_local "$PGHOST" || die "PostgreSQL at $PGHOST:$PGPORT does not answer (a remote server: start it there)"
  local fresh=0
  if [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    is_root || die "PostgreSQL is not installed. Install it: sudo apt-get install -y postgresql redis-server — then run this again"
    apt_install postgresql
    fresh=1
  fi
  is_root || die "PostgreSQL is installed but not running on $PGHOST:$PGPORT. Start it: sudo pg_ctlcluster $(ls /etc/postgresql | tail -n 1) main start"
  [ "$fresh" = 1 ] && configure_fresh_postgres
  start_postgres || die "could not start PostgreSQL"
  wait_for PostgreSQL pg_up
  if [ "$fresh" = 1 ]; then
    local me
    me=$(id -un)
    su postgres -c "psql -h /var/run/postgresql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='$me'\"" | grep -q 1 \
      || su postgres -c "createuser -h /var/run/postgresql -s '$me'"
  fi
}

ensure_redis() {
  redis_up && return 0
  is_local "$REDIS_HOST" || die "Redis at $REDIS_HOST:$REDIS_PORT does not answer (a remote server: start it there)"
  if ! command -v redis-server >/dev/null 2>&1; then
    is_root || die "Redis is not installed. Install it: sudo apt-get install -y redis-server — then run this again"
    apt_install redis-server
    redis_up && return 0 # the package may have started it
  fi
  is_root || die "Redis is installed but not running on $REDIS_HOST:$REDIS_PORT. Start it: sudo service redis-server start"
  say "starting Redis on $REDIS_HOST:$REDIS_PORT (appendonly yes, appendfsync everysec)"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
    --appendonly yes --appendfsync everysec --save "" \
    --dir /var/lib/redis --logfile /var/log/redis/firehose.log
  wait_for Redis redis_up
}

create_db() {
  local name=$1
  [[ "$name" =~ ^[a-z_][a-z0-9_]*$ ]] || die "database name '$name': use lower-case letters, digits and _"
  if ! psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
    say "creating database $name"
    psql -d postgres -qc "CREATE DATABASE $name" >/dev/null
  fi
}

case "${1:-}" in
  ensure)
    ensure_postgres
    ensure_redis
    say "PostgreSQL on $PGHOST:$PGPORT and Redis on $REDIS_HOST:$REDIS_PORT are up"
    ;;
  createdb)
    [ -n "${2:-}" ] || die "usage: $0 createdb NAME"
    command -v psql >/dev/null 2>&1 || die "psql is not installed (apt-get install -y postgresql-client)"
    create_db "$2"
    ;;
  *)
    echo "usage: $0 ensure | createdb NAME" >&2
    exit 2
    ;;
esac
