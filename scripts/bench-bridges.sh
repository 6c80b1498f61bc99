#!/usr/bin/env bash
# bench-bridges.sh — CPU per reading with 1, 2 and 3 bridges sharing the shards: for each
# count, start that many `firehose serve --roles bridge` on an empty deployment of SHARDS
# shards, wait until they share the shards evenly, then write N readings into the streams
# through firehose's producer (bin/fill -via producer, 200 callers) and measure, until every
# reading is committed, the CPU of the bridge processes and of the database's PostgreSQL
# backends (bin/proccpu). Prints one row per round and count, then the medians as ratios
# against 1 bridge. On one machine more bridges add overhead (membership, more connections
# and smaller batches per shard), not speed: CPU per reading shows the shape of it.
#
#   scripts/bench-bridges.sh                   # 500,000 readings of 12 shards, 3 rounds
#   N=200000 ROUNDS=1 BRIDGES="1 3" scripts/bench-bridges.sh
#
# Own redis-server on a free loopback port (AOF everysec) and own database
# firehose_bench_bridges_<pid>, both removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-500000}
ROUNDS=${ROUNDS:-3}
SHARDS=${SHARDS:-12}
BRIDGES=${BRIDGES:-1 2 3}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
scripts/services.sh ensure
go build -o bin/firehose ./cmd/firehose
go build -o bin/fill ./internal/benchtools/fill
go build -o bin/proccpu ./internal/benchtools/proccpu
# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh
bench_start firehose_bench_bridges
PIDS=() PORTS=()
stop_bridges() {
  [ ${#PIDS[@]} -gt 0 ] && { kill -TERM "${PIDS[@]}" 2>/dev/null || true; wait "${PIDS[@]}" 2>/dev/null || true; }
  PIDS=() PORTS=()
}
cleanup() {
  bench_cpu_stop
  stop_bridges
  bench_cleanup
}
trap cleanup EXIT
# metric NAME: the sum of NAME over the running bridges.
metric() {
  local p sum=0 v
  for p in "${PORTS[@]}"; do
    v=$(curl -sf "http://127.0.0.1:$p/metrics" 2>/dev/null | awk -v k="$1" '$1 == k { printf "%d", $2 }')
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
# even: every bridge sees them all as members and owns its share, and every shard is owned.
even() {
  local p o s m total=0
  for p in "${PORTS[@]}"; do
    read -r o s m < <(curl -sf "http://127.0.0.1:$p/metrics" 2>/dev/null |
      awk '$1 == "firehose_bridge_shards_owned" { o = $2 } $1 == "firehose_bridge_shards_share" { s = $2 }
           $1 == "firehose_bridge_members" { m = $2 } END { print o + 0, s + 0, m + 0 }')
    [ "$m" = "${#PORTS[@]}" ] && [ "$o" = "$s" ] || return 1
    total=$((total + o))
  done
  [ "$total" -eq "$SHARDS" ]
}
declare -A BR PGC RATE
echo "| round | bridges | readings | time | readings/s | bridge CPU µs/reading | PostgreSQL CPU µs/reading | total µs/reading |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for k in $BRIDGES; do
    bench_db
    bin/firehose migrate --postgres "$PG" >/dev/null
    redis-cli -p "$RPORT" flushall >/dev/null
    cpu_args=()
    for i in $(seq 1 "$k"); do
      port=$(free_port)
      # shellcheck disable=SC2086
      bin/firehose serve --roles bridge --postgres "$PG" --redis "redis://127.0.0.1:$RPORT/0" --redis-prefix share \
        --shards "$SHARDS" --admin-addr "127.0.0.1:$port" --log-level warn $EXTRA_FLAGS 2>>"$work/bridge.log" &
      PIDS+=($!) PORTS+=("$port")
      cpu_args+=("bridge$i=$!")
    done
    for _ in $(seq 1 300); do even && sleep 0.5 && even && break; sleep 0.1; done
    even || { echo "round $round, $k bridges: the shards were not shared evenly" >&2; cat "$work/bridge.log" >&2; exit 1; }
    bench_cpu_start "$work/cpu.$round.$k" "${cpu_args[@]}"
    start=$(date +%s.%N)
    bin/fill -via producer -redis "redis://127.0.0.1:$RPORT/0" -prefix share -shards "$SHARDS" -n "$N" >/dev/null 2>&1
    while [ "$(metric firehose_bridge_rows_committed_total)" -lt "$N" ]; do sleep 0.05; done
    end=$(date +%s.%N)
    bench_cpu_stop
    stop_bridges
    rows=$(psql -h 127.0.0.1 -d "$DB" -tAc "SELECT count(*) FROM readings")
    [ "$rows" -eq "$N" ] || echo "round $round, $k bridges: $rows rows in readings, want $N" >&2
    f="$work/cpu.$round.$k"
    bcpu=0
    for i in $(seq 1 "$k"); do bcpu=$(awk -v a="$bcpu" -v b="$(cpu_of "$f" "bridge$i")" 'BEGIN { print a + b }'); done
    pcpu=$(cpu_of "$f" postgres)
    BR[$round,$k]=$(us_per "$bcpu" "$N") PGC[$round,$k]=$(us_per "$pcpu" "$N")
    RATE[$round,$k]=$(awk -v n="$N" -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", n / (b - a) }')
    awk -v r="$round" -v k="$k" -v n="$N" -v a="$start" -v b="$end" -v br="${BR[$round,$k]}" -v pg="${PGC[$round,$k]}" \
      'BEGIN { d = b - a; printf "| %d | %d | %d | %.2fs | %.0f | %s | %s | %.1f |\n", r, k, n, d, n / d, br, pg, br + pg }'
  done
done
echo
echo "| bridges | readings/s (median) | bridge CPU µs/reading (median) | vs 1 bridge | PostgreSQL CPU µs/reading (median) | vs 1 bridge | total vs 1 bridge |"
echo "|---|---|---|---|---|---|---|"
for k in $BRIDGES; do
  b=() p=() r=()
  for round in $(seq 1 "$ROUNDS"); do b+=("${BR[$round,$k]}") p+=("${PGC[$round,$k]}") r+=("${RATE[$round,$k]}"); done
  mb=$(median "${b[@]}") mp=$(median "${p[@]}") mr=$(median "${r[@]}")
  [ "$k" = "$(echo "$BRIDGES" | awk '{ print $1 }')" ] && { b1=$mb p1=$mp; }
  awk -v k="$k" -v mr="$mr" -v mb="$mb" -v mp="$mp" -v b1="$b1" -v p1="$p1" \
    'BEGIN { printf "| %d | %s | %s | %.2f | %s | %.2f | %.2f |\n", k, mr, mb, mb / b1, mp, mp / p1, (mb + mp) / (b1 + p1) }'
done
echo
bench_stamp
echo "N=$N SHARDS=$SHARDS ROUNDS=$ROUNDS; flags: ${EXTRA_FLAGS:-defaults}; Redis AOF everysec; fill via the producer, 200 callers"
