# benchlib.sh — shared by the bench scripts (source it): a free port, a redis-server of
# their own with AOF on as in production, and a database of their own, all removed by
# bench_cleanup.

# free_port prints a loopback port that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# bench_start NAME: sets work (a temp dir), RPORT (a redis-server with appendonly yes,
# appendfsync everysec, data in $work), DB=NAME (dropped and created) and PG (its URL).
bench_start() {
  work=$(mktemp -d)
  RPORT=$(free_port)
  redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$work" --appendonly yes --appendfsync everysec \
    --save "" --daemonize yes --logfile "$work/redis.log" --pidfile "$work/redis.pid"
  DB=$1
  bench_db
  PG="postgres://127.0.0.1:5432/$DB?sslmode=disable"
}

# bench_db (re)creates the empty database $DB.
bench_db() {
  psql -h 127.0.0.1 -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -qc "CREATE DATABASE $DB" >/dev/null 2>&1
}

# bench_cleanup stops the redis-server, drops the database and removes $work.
bench_cleanup() {
  redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
