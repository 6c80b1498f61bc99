#!/usr/bin/env bash
# bench-redis-memory.sh — Redis memory per backlogged reading: fills the shard streams
# with N readings while no bridge runs, then reads INFO memory (used_memory after minus
# before, over N) and MEMORY USAGE ... SAMPLES 0 of every shard stream (every entry
# counted, none sampled), in the same run for each way of writing:
#   xadd      one entry per reading, stream encoding v1 (internal/benchtools/fill -via xadd):
#             the baseline
#   producer  firehose's own producer with CALLERS callers, one reading in flight each (fill
#             -via producer, as CALLERS devices with one QoS 1 publish in flight): whatever
#             entries the producer writes today
#
#   scripts/bench-redis-memory.sh                     # N=1000000, 4 shards, 200 callers
#   N=200000 MODES=producer scripts/bench-redis-memory.sh
#
# Own redis-server on a free loopback port (AOF everysec, as in production), flushed
# before each mode, removed at the end. No PostgreSQL. Bounded: two fills of N readings.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
SHARDS=${SHARDS:-4}
CALLERS=${CALLERS:-200}
MODES=${MODES:-"xadd producer"}
ROUNDS=${ROUNDS:-1}
command -v redis-server >/dev/null || { echo "redis-server is not installed: scripts/services.sh ensure installs it" >&2; exit 1; }
go build -o bin/fill ./internal/benchtools/fill

# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh
bench_redis
trap bench_cleanup EXIT
r() { redis-cli -p "$RPORT" "$@"; }
used() { r info memory | awk -F: '$1 == "used_memory" { print $2 + 0 }'; }

echo "| round | entries written by | readings | stream entries | readings per entry | used_memory delta | bytes per reading (INFO) | MEMORY USAGE of the streams | bytes per reading (MEMORY USAGE) |"
echo "|---|---|---|---|---|---|---|---|---|"
declare -A per_info per_usage
for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    r flushall sync >/dev/null
    r memory purge >/dev/null 2>&1 || true
    before=$(used)
    bin/fill -redis "redis://127.0.0.1:$RPORT/0" -prefix mem -shards "$SHARDS" -n "$N" -via "$mode" -callers "$CALLERS" >&2
    after=$(used)
    entries=0 usage=0
    # The shard streams, whatever their key layout names them.
    for key in $(r --scan --pattern 'mem:readings:*'); do
      entries=$((entries + $(r xlen "$key")))
      usage=$((usage + $(r memory usage "$key" samples 0)))
    done
    row=$(awk -v rd="$round" -v m="$mode" -v c="$CALLERS" -v n="$N" -v e="$entries" -v d="$((after - before))" -v u="$usage" 'BEGIN {
      w = (m == "producer") ? "producer, " c " callers" : "fill, one v1 entry per reading"
      printf "| %d | %s | %d | %d | %.2f | %.1f MB | %.1f | %.1f MB | %.1f |", rd, w, n, e, n / e, d / 1e6, d / n, u / 1e6, u / n }')
    echo "$row"
    per_info[$mode]="${per_info[$mode]:-} $(awk -v d="$((after - before))" -v n="$N" 'BEGIN { printf "%.1f", d / n }')"
    per_usage[$mode]="${per_usage[$mode]:-} $(awk -v u="$usage" -v n="$N" 'BEGIN { printf "%.1f", u / n }')"
  done
done
echo
for mode in $MODES; do
  # shellcheck disable=SC2086
  echo "median bytes per backlogged reading, $mode: $(median ${per_info[$mode]}) (INFO used_memory), $(median ${per_usage[$mode]}) (MEMORY USAGE)"
done
if [[ " $MODES " == *" xadd "* && " $MODES " == *" producer "* ]]; then
  # shellcheck disable=SC2086
  awk -v p="$(median ${per_info[producer]})" -v x="$(median ${per_info[xadd]})" 'BEGIN { printf "producer / one-entry-per-reading: %.2fx the memory per reading\n", p / x }'
fi
echo "$(bench_stamp); $SHARDS shards, Redis $(r info server | awk -F: '$1 == "redis_version" { print $2 }' | tr -d '\r'), AOF everysec"
