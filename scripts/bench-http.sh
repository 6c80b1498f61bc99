#!/usr/bin/env bash
# bench-http.sh — wrk against POST /readings/fast: a bare Go handler (the ceiling of
# this box with wrk beside it) and firehose (gateway + Redis + bridge + PostgreSQL),
# alternating, in one run; then counts the rows that landed. With each, the CPU
# microseconds per acknowledged request of every process from /proc accounting
# (bin/proccpu: utime+stime of /proc/PID/stat), and the ratios firehose / bare of the
# same round.
#
#   scripts/bench-http.sh                 # 3 rounds of 30s each, 64 connections
#   ROUNDS=1 DURATION=10s scripts/bench-http.sh
#   SPLIT=0 scripts/bench-http.sh         # httpgw and bridge in one process
#
# CPU window: from just before wrk starts to the moment every acknowledged request has
# landed (firehose) or wrk has ended (bare). firehose runs one process per role
# (--roles httpgw, --roles bridge; SPLIT=0: --roles httpgw,bridge); PostgreSQL is the
# backends of the bench database (pg_stat_activity: the bridge's sessions, the gateway's
# small pool, autovacuum workers), not the script's own counting sessions (application_name
# bench-verify) nor the cluster's shared walwriter and checkpointer; wrk's CPU is its rusage.
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
SPLIT=${SPLIT:-1}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
scripts/services.sh ensure
go build -o bin/firehose ./cmd/firehose
go build -o bin/bare ./internal/benchtools/bare
go build -o bin/proccpu ./internal/benchtools/proccpu

# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh
bench_start firehose_bench
FH_PIDS=()
cleanup() {
  bench_cpu_stop
  for p in "${FH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${BARE_PID:-}" ] && kill "$BARE_PID" 2>/dev/null || true
  bench_cleanup
}
trap cleanup EXIT

cat >"$work/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"id": 1, "reading": 42}'
wrk.headers["Content-Type"] = "application/json"
EOF

# run_wrk URL WRKCPU -> prints "rps p50 p99 total non2xx"; wrk's CPU goes to WRKCPU
run_wrk() {
  local out
  out=$(bin/proccpu -out "$2" -- wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$work/post.lua" "$1")
  echo "$out" >>"$work/wrk.log"
  local rps p50 p99 total non2xx
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "$rps $p50 $p99 $total ${non2xx:-0}"
}

rows() { PGAPPNAME=$BENCH_VERIFY_APP psql -h 127.0.0.1 -d "$DB" -tAc "SELECT count(*) FROM readings" 2>/dev/null || echo 0; }
REDIS_PID=$(cat "$work/redis.pid")

# cpu_cols CPUFILE WRKCPU COUNT: sets the CPU µs per request of each group: edge bridge
# redis pg total gen (wrk).
cpu_cols() {
  local e b r g
  e=$(awk '$1 == "httpgw" || $1 == "firehose" || $1 == "bare" { s += $2 } END { print s + 0 }' "$1")
  b=$(cpu_of "$1" bridge) r=$(cpu_of "$1" redis) g=$(cpu_of "$1" postgres)
  c_edge=$(us_per "$e" "$3") c_bridge=$(us_per "$b" "$3") c_redis=$(us_per "$r" "$3") c_pg=$(us_per "$g" "$3")
  c_total=$(us_per "$(awk -v a="$e" -v b="$b" -v c="$r" -v d="$g" 'BEGIN { print a + b + c + d }')" "$3")
  c_gen=$(us_per "$(cpu_of "$2" loadgen)" "$3")
}
# fh_serve ROLES PREFIX ARGS...: starts firehose serve; appends its pid to FH_PIDS.
fh_serve() {
  local roles=$1 prefix=$2; shift 2
  # shellcheck disable=SC2086
  bin/firehose serve --roles "$roles" --postgres "$PG" --redis "redis://127.0.0.1:$RPORT/0" --redis-prefix "$prefix" \
    --log-level warn "$@" $EXTRA_FLAGS 2>>"$work/firehose.log" & FH_PIDS+=("$!")
}
ready() { for _ in $(seq 1 100); do curl -sf "$1/readyz" >/dev/null && return 0; sleep 0.1; done; return 1; }

bin/firehose migrate --postgres "$PG" >/dev/null
declare -A V
echo "| round | target | req/s | p50 | p99 | requests | non-2xx | rows landed | CPU µs/request: edge | bridge | redis-server | PostgreSQL | **system** | wrk |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  port=$(free_port)
  bin/bare -addr "127.0.0.1:$port" & BARE_PID=$!
  sleep 0.5
  bench_cpu_start "$work/bare.$round.cpu" "bare=$BARE_PID"
  read -r rps p50 p99 total non2xx < <(run_wrk "http://127.0.0.1:$port/readings/fast" "$work/wrk-bare.$round.cpu")
  bench_cpu_stop
  kill "$BARE_PID"; wait "$BARE_PID" 2>/dev/null || true; BARE_PID=
  cpu_cols "$work/bare.$round.cpu" "$work/wrk-bare.$round.cpu" "$total"
  V[bare,$round,rps]=$rps V[bare,$round,cpu]=$c_total V[bare,$round,p99]=$p99
  echo "| $round | bare net/http | $rps | $p50 | $p99 | $total | $non2xx | - | $c_edge | - | - | - | **$c_total** | $c_gen |"

  port=$(free_port)
  before=$(rows)
  if [ "$SPLIT" = 1 ]; then
    fh_serve httpgw "bench$round" --http-addr "127.0.0.1:$port"
    cpu_args=("httpgw=${FH_PIDS[-1]}")
    bport=$(free_port)
    fh_serve bridge "bench$round" --admin-addr "127.0.0.1:$bport"
    cpu_args+=("bridge=${FH_PIDS[-1]}")
    ready "http://127.0.0.1:$bport" || { echo "the bridge did not start:"; cat "$work/firehose.log"; exit 1; }
  else
    fh_serve httpgw,bridge "bench$round" --http-addr "127.0.0.1:$port"
    cpu_args=("firehose=${FH_PIDS[-1]}")
  fi
  ready "http://127.0.0.1:$port" || { echo "firehose did not start:"; cat "$work/firehose.log"; exit 1; }
  bench_cpu_start "$work/fh.$round.cpu" "${cpu_args[@]}" "redis=$REDIS_PID"
  read -r rps p50 p99 total non2xx < <(run_wrk "http://127.0.0.1:$port/readings/fast" "$work/wrk-fh.$round.cpu")
  acked=$((total - non2xx))
  for _ in $(seq 1 300); do [ $(( $(rows) - before )) -ge "$acked" ] && break; sleep 0.1; done
  bench_cpu_stop
  for p in "${FH_PIDS[@]}"; do kill -TERM "$p"; done
  for p in "${FH_PIDS[@]}"; do wait "$p" || { echo "firehose exited non-zero:"; cat "$work/firehose.log"; }; done
  FH_PIDS=()
  landed=$(( $(rows) - before ))
  cpu_cols "$work/fh.$round.cpu" "$work/wrk-fh.$round.cpu" "$acked"
  V[fh,$round,rps]=$rps V[fh,$round,cpu]=$c_total V[fh,$round,p99]=$p99
  echo "| $round | firehose | $rps | $p50 | $p99 | $total | $non2xx | $landed of $acked acked | $c_edge | $c_bridge | $c_redis | $c_pg | **$c_total** | $c_gen |"
done
cr=() tr=() fr=() br=() fc=() bc=()
for r in $(seq 1 "$ROUNDS"); do
  cr+=("$(awk -v x="${V[fh,$r,cpu]}" -v y="${V[bare,$r,cpu]}" 'BEGIN { printf "%.2f", x / y }')")
  tr+=("$(awk -v x="${V[fh,$r,rps]}" -v y="${V[bare,$r,rps]}" 'BEGIN { printf "%.2f", x / y }')")
  fr+=("${V[fh,$r,rps]}") br+=("${V[bare,$r,rps]}") fc+=("${V[fh,$r,cpu]}") bc+=("${V[bare,$r,cpu]}")
done
echo
echo "Medians of $ROUNDS rounds: firehose $(median "${fr[@]}") req/s at $(median "${fc[@]}") µs of system CPU a request; bare handler $(median "${br[@]}") req/s at $(median "${bc[@]}") µs."
echo "firehose / bare, same round: throughput **$(median "${tr[@]}")** ($(range "${tr[@]}")), system CPU per request **$(median "${cr[@]}")** ($(range "${cr[@]}"))."
mode="one process per role (--roles httpgw, --roles bridge)"
[ "$SPLIT" = 1 ] || mode="--roles httpgw,bridge in one process"
echo "$(bench_stamp); wrk -t$THREADS -c$CONNS -d$DURATION, Redis AOF everysec; firehose: $mode, default flags${EXTRA_FLAGS:+ and $EXTRA_FLAGS}."
echo "CPU per request: CPU seconds of each process over the window (firehose: until every acknowledged request landed) / requests acknowledged; system = edge + bridge + redis-server + PostgreSQL backends of the bench database, without wrk."
