#!/usr/bin/env bash
# bench-http.sh — wrk against POST /readings/fast: a bare Go handler (the ceiling of
# this box with wrk beside it) and firehose (gateway + Redis + bridge + PostgreSQL),
# alternating, in one run; then counts the rows that landed.
#
#   scripts/bench-http.sh                 # 3 rounds of 30s each, 64 connections
#   ROUNDS=1 DURATION=10s scripts/bench-http.sh
#
# It starts its own redis-server (AOF on, appendfsync everysec, as in production) on a
# free loopback port and uses its own database firehose_bench; both are removed at the
# end. Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
scripts/services.sh ensure
go build -o bin/firehose ./cmd/firehose
go build -o bin/bare ./internal/benchtools/bare

# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh
bench_start firehose_bench
cleanup() {
  [ -n "${FH_PID:-}" ] && kill "$FH_PID" 2>/dev/null || true
  [ -n "${BARE_PID:-}" ] && kill "$BARE_PID" 2>/dev/null || true
  bench_cleanup
}
trap cleanup EXIT

cat >"$work/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"id": 1, "reading": 42}'
wrk.headers["Content-Type"] = "application/json"
EOF

# run_wrk URL -> prints "rps p50 p99 total non2xx"
run_wrk() {
  local out
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$work/post.lua" "$1")
  echo "$out" >>"$work/wrk.log"
  local rps p50 p99 total non2xx
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "$rps $p50 $p99 $total ${non2xx:-0}"
}

rows() { psql -h 127.0.0.1 -d "$DB" -tAc "SELECT count(*) FROM readings" 2>/dev/null || echo 0; }

echo "| round | target | req/s | p50 | p99 | requests | non-2xx | rows landed |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  port=$(free_port)
  bin/bare -addr "127.0.0.1:$port" & BARE_PID=$!
  sleep 0.5
  read -r rps p50 p99 total non2xx < <(run_wrk "http://127.0.0.1:$port/readings/fast")
  kill "$BARE_PID"; wait "$BARE_PID" 2>/dev/null || true; BARE_PID=
  echo "| $round | bare net/http | $rps | $p50 | $p99 | $total | $non2xx | - |"

  port=$(free_port)
  before=$(rows)
  # shellcheck disable=SC2086
  bin/firehose serve --roles httpgw,bridge --postgres "$PG" --redis "redis://127.0.0.1:$RPORT/0" --redis-prefix "bench$round" \
    --http-addr "127.0.0.1:$port" --log-level warn $EXTRA_FLAGS 2>"$work/firehose.log" & FH_PID=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  read -r rps p50 p99 total non2xx < <(run_wrk "http://127.0.0.1:$port/readings/fast")
  acked=$((total - non2xx))
  for _ in $(seq 1 300); do [ $(( $(rows) - before )) -ge "$acked" ] && break; sleep 0.1; done
  kill -TERM "$FH_PID"; wait "$FH_PID" || { echo "firehose exited non-zero:"; cat "$work/firehose.log"; }
  FH_PID=
  landed=$(( $(rows) - before ))
  echo "| $round | firehose | $rps | $p50 | $p99 | $total | $non2xx | $landed of $acked acked |"
done
echo
echo "machine: $(nproc) cores, $(date -u +%Y-%m-%d), wrk -t$THREADS -c$CONNS -d$DURATION, Redis AOF everysec"
