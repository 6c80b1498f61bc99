# benchlib.sh — shared by the bench scripts (source it): a free port, a redis-server of
# their own with AOF on as in production, and a database of their own, all removed by
# bench_cleanup.

# free_port prints a loopback port that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# bench_redis: sets work (a temp dir) and RPORT (a redis-server with appendonly yes,
# appendfsync everysec, data in $work, pid in $work/redis.pid).
bench_redis() {
  work=$(mktemp -d)
  RPORT=$(free_port)
  redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$work" --appendonly yes --appendfsync everysec \
    --save "" --daemonize yes --logfile "$work/redis.log" --pidfile "$work/redis.pid"
  for _ in $(seq 1 50); do [ -s "$work/redis.pid" ] && redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

# bench_start NAME: bench_redis, then DB=NAME_<pid> (created; dropped by bench_cleanup) and
# PG (its URL): two runs of one script at once each have their own database.
bench_start() {
  bench_redis
  DB=${1}_$$
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
  [ -n "${DB:-}" ] && { psql -h 127.0.0.1 -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; }
  rm -rf "$work"
}

# Sessions of the load generator and of the scripts' own checks (counting rows,
# verifying) carry this application_name, so that CPU accounting can leave
# them out of the pipeline's PostgreSQL figure (proccpu -pg-loadgen-app).
BENCH_VERIFY_APP=bench-verify

# bench_cpu_start OUT NAME=PID...: starts proccpu in the background over those
# processes and the backends of $DB, writing to OUT when stopped; sets CPU_PID.
bench_cpu_start() {
  local out=$1; shift
  local args=() p
  for p in "$@"; do args+=(-p "$p"); done
  rm -f "$out.ready"
  bin/proccpu -out "$out" -ready "$out.ready" -db "${DB:-}" -pg-loadgen-app "$BENCH_VERIFY_APP" "${args[@]}" & CPU_PID=$!
  for _ in $(seq 1 50); do [ -e "$out.ready" ] && break; sleep 0.1; done
}

# bench_cpu_stop: ends the window of the proccpu started by bench_cpu_start.
bench_cpu_stop() {
  [ -n "${CPU_PID:-}" ] || return 0
  kill -TERM "$CPU_PID" 2>/dev/null || true
  wait "$CPU_PID" 2>/dev/null || true
  CPU_PID=
}

# cpu_of FILE NAME: seconds of CPU of group NAME in a proccpu result (0 if absent).
cpu_of() { awk -v k="$2" '$1 == k { v = $2 } END { print v + 0 }' "$1" 2>/dev/null || echo 0; }

# us_per CPU_SECONDS COUNT: microseconds per item, one decimal ("-" when COUNT is 0).
us_per() { awk -v c="$1" -v n="$2" 'BEGIN { if (n > 0) printf "%.1f\n", c * 1e6 / n; else print "-" }'; }

# median V...: the median of numbers (the lower middle of an even count); "-" when none.
median() { printf '%s\n' "$@" | grep -E '^-?[0-9.]+$' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else print a[int((NR + 1) / 2)] }'; }

# range V...: "min-max" of numbers, or the one value.
range() { printf '%s\n' "$@" | grep -E '^-?[0-9.]+$' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR == 0) print "-"; else if (lo == hi) print lo; else print lo "-" hi }'; }

# bench_stamp: the line every table ends with: cores, date, commit (BENCH_COMMIT when
# run from an exported tree), load average.
bench_stamp() {
  local commit=${BENCH_COMMIT:-}
  if [ -z "$commit" ]; then
    if commit=$(git rev-parse --short HEAD 2>/dev/null); then
      git diff --quiet HEAD -- . 2>/dev/null || commit="$commit + uncommitted changes"
    else
      commit="unknown (not a git checkout: set BENCH_COMMIT)"
    fi
  fi
  echo "machine: $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit; load average before/after: ${BENCH_LOAD0:-?} / $(cut -d' ' -f1-3 /proc/loadavg)"
}
BENCH_LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
