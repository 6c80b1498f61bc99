#!/usr/bin/env bash
# bench-dedup.sh — what --dedup costs, against --dedup off in the same run: two fleets
# through one `firehose serve` (every role), alternating the modes, ROUNDS rounds of
# DURATION each, and the Redis memory one remembered reading takes:
#
#   mqtt  200 MQTT QoS 1 devices, closed loop (one publish in flight per connection)
#   http  32 HTTP devices posting /v1/readings of 100 readings, closed loop
#
# MODES are the --dedup values compared (default "off natural"; "id" needs a fleet that
# sends message ids, see firehose simulate --help). Prints throughput, ack latency,
# missing readings and CPU µs per landed reading of firehose, redis-server and PostgreSQL.
#
#   scripts/bench-dedup.sh                      # 3 rounds of 20 s
#   ROUNDS=1 DURATION=10s FLEETS=mqtt scripts/bench-dedup.sh
#
# Its own redis-server (AOF everysec) on a free loopback port and its own database
# firehose_bench_dedup_<pid>, removed at the end. Load goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
MODES=${MODES:-off natural}
FLEETS=${FLEETS:-mqtt http}
scripts/services.sh ensure
go build -o bin/firehose ./cmd/firehose
go build -o bin/proccpu ./internal/benchtools/proccpu
# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh
bench_start firehose_bench_dedup
P1=
cleanup() {
  [ -n "$P1" ] && kill "$P1" 2>/dev/null
  wait 2>/dev/null || true
  bench_cleanup
}
trap cleanup EXIT
wait_ready() { for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }
rpid=$(cat "$work/redis.pid")

echo "| round | fleet | --dedup | readings/s | ack p50 | ack p99 | missing | dup. | firehose µs | redis µs | PostgreSQL µs | **system µs/reading** |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
declare -A thr sys
for round in $(seq 1 "$ROUNDS"); do
  for fleet in $FLEETS; do
    for mode in $MODES; do
      prefix="bd$round$fleet$mode"
      HP=$(free_port) MP=$(free_port)
      bin/firehose serve --postgres "$PG" --redis "redis://127.0.0.1:$RPORT/0" --redis-prefix "$prefix" --log-level error \
        --dedup "$mode" --http-addr "127.0.0.1:$HP" --mqtt-addr "127.0.0.1:$MP" 2>>"$work/serve.log" & P1=$!
      wait_ready "http://127.0.0.1:$HP/readyz" || { cat "$work/serve.log" >&2; exit 1; }
      case $fleet in
        mqtt) load=(--mqtt "tcp://127.0.0.1:$MP" --protocol mqtt --qos 1 --devices 200) ;;
        http) load=(--http "http://127.0.0.1:$HP" --protocol http --endpoint v1 --batch 100 --devices 32) ;;
      esac
      out="$work/sim.$round.$fleet.$mode.txt"
      cpu="$work/cpu.$round.$fleet.$mode"
      bench_cpu_start "$cpu" "firehose=$P1" "redis=$rpid"
      bin/firehose simulate "${load[@]}" --rate 0 --metrics off --postgres "$PG&application_name=$BENCH_VERIFY_APP" \
        --duration "$DURATION" --land-timeout 60s --report "$work/report.$round.$fleet.$mode" >"$out" 2>&1 ||
        { echo "round $round $fleet $mode FAILED" >&2; cat "$out" >&2; }
      bench_cpu_stop
      if [ "$mode" != off ]; then
        # Bytes per remembered key: the shards' dedup sets over their members.
        keys=0 bytes=0
        for k in $(redis-cli -p "$RPORT" --scan --pattern "$prefix:dedup:*"); do
          keys=$((keys + $(redis-cli -p "$RPORT" scard "$k")))
          bytes=$((bytes + $(redis-cli -p "$RPORT" memory usage "$k" samples 0)))
        done
        [ "$keys" -gt 0 ] && echo "$fleet $mode: $keys keys remembered, $(awk -v b="$bytes" -v k="$keys" 'BEGIN { printf "%.1f", b / k }') bytes each" >>"$work/memory.txt"
      fi
      kill "$P1"; wait "$P1" 2>/dev/null || true; P1=
      j="$work/report.$round.$fleet.$mode/report.json"
      landed=$(jq -r '.landing.rows // 0' "$j" 2>/dev/null || echo 0)
      total=$(awk -v a="$(cpu_of "$cpu" firehose)" -v b="$(cpu_of "$cpu" redis)" -v c="$(cpu_of "$cpu" postgres)" 'BEGIN { print a + b + c }')
      s=$(us_per "$total" "$landed")
      t=$(jq -r '.send.acked_per_s | floor' "$j" 2>/dev/null || echo 0)
      thr[$fleet.$mode]="${thr[$fleet.$mode]:-} $t"
      sys[$fleet.$mode]="${sys[$fleet.$mode]:-} $s"
      jq -r --arg r "$round" --arg f "$fleet" --arg m "$mode" --arg fh "$(us_per "$(cpu_of "$cpu" firehose)" "$landed")" \
        --arg rd "$(us_per "$(cpu_of "$cpu" redis)" "$landed")" --arg pg "$(us_per "$(cpu_of "$cpu" postgres)" "$landed")" --arg s "$s" \
        '"| \($r) | \($f) | \($m) | \(.send.acked_per_s | floor) | \(.ack_latency.p50_ms) ms | \(.ack_latency.p99_ms) ms | \(.landing.missing // 0) | \((.landing.dup_once_acked // 0) + (.landing.dup_after_resend // 0)) | \($fh) | \($rd) | \($pg) | **\($s)** |"' "$j" 2>/dev/null ||
        echo "| $round | $fleet | $mode | (no report: $(tail -n 1 "$out")) | | | | | | | | |"
    done
  done
done
echo
base=${MODES%% *}
for fleet in $FLEETS; do
  for mode in $MODES; do
    [ "$mode" = "$base" ] && continue
    # shellcheck disable=SC2086
    echo "$fleet, --dedup $mode / $base, medians over the rounds: throughput $(awk -v a="$(median ${thr[$fleet.$mode]})" -v b="$(median ${thr[$fleet.$base]})" 'BEGIN { printf "%.2f", a / b }')x, system CPU per reading $(awk -v a="$(median ${sys[$fleet.$mode]})" -v b="$(median ${sys[$fleet.$base]})" 'BEGIN { printf "%.2f", a / b }')x"
  done
done
[ -s "$work/memory.txt" ] && cat "$work/memory.txt"
bench_stamp
