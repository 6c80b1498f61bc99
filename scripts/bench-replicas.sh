#!/usr/bin/env bash
# bench-replicas.sh — the cost of --redis-min-replicas: the 200-connection MQTT QoS 1
# fleet (firehose simulate, one publish in flight per connection) against a Redis primary
# with one replica of its own, with --redis-min-replicas 0 and 1 alternating, ROUNDS
# rounds of DURATION each; prints throughput, ack latency, missing readings and the round
# trips refused for want of replicas.
#
#   scripts/bench-replicas.sh                  # 2 rounds of 20 s
#   ROUNDS=3 DURATION=30s scripts/bench-replicas.sh
#
# Its own redis-server primary (AOF everysec) and replica on free loopback ports and its
# own database firehose_bench_replicas_<pid>, all removed at the end. Load goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-20s}
scripts/services.sh ensure
go build -o bin/firehose ./cmd/firehose
# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh
bench_start firehose_bench_replicas
REP=$(free_port)
rdir=$(mktemp -d)
redis-server --port "$REP" --bind 127.0.0.1 --dir "$rdir" --appendonly yes --appendfsync everysec --save "" \
  --daemonize yes --replicaof 127.0.0.1 "$RPORT" --logfile "$rdir/redis.log" --pidfile "$rdir/redis.pid"
P1= P2=
cleanup() {
  [ -n "$P1$P2" ] && kill $P1 $P2 2>/dev/null; wait 2>/dev/null || true
  redis-cli -p "$REP" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$rdir"
  bench_cleanup
}
trap cleanup EXIT
for _ in $(seq 100); do redis-cli -p "$REP" info replication 2>/dev/null | grep -q "master_link_status:up" && break; sleep 0.2; done
wait_ready() { for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }
echo "| round | N | readings/s | ack p50 | ack p99 | missing | replica timeouts |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for n in 0 1; do
    MP=$(free_port) AP=$(free_port) BP=$(free_port)
    bin/firehose serve --roles broker --postgres "$PG" --redis "redis://127.0.0.1:$RPORT/0" --redis-prefix rep --log-level error \
      --mqtt-addr "127.0.0.1:$MP" --admin-addr "127.0.0.1:$AP" --redis-min-replicas "$n" 2>>"$work/broker.log" & P1=$!
    bin/firehose serve --roles bridge --postgres "$PG" --redis "redis://127.0.0.1:$RPORT/0" --redis-prefix rep --log-level error \
      --admin-addr "127.0.0.1:$BP" 2>>"$work/bridge.log" & P2=$!
    wait_ready "http://127.0.0.1:$AP/readyz" && wait_ready "http://127.0.0.1:$BP/readyz" || { cat "$work"/*.log >&2; exit 1; }
    out="$work/sim.$round.$n.txt"
    bin/firehose simulate --mqtt "tcp://127.0.0.1:$MP" --postgres "$PG&application_name=$BENCH_VERIFY_APP" \
      --metrics "http://127.0.0.1:$AP/metrics" --protocol mqtt --qos 1 --rate 0 --devices 200 \
      --duration "$DURATION" --land-timeout 60s --report "$work/report.$round.$n" >"$out" 2>&1 || { echo "round $round N=$n FAILED" >&2; cat "$out" >&2; }
    timeouts=$(curl -s "http://127.0.0.1:$AP/metrics" | awk '$1 == "firehose_producer_replica_timeouts_total" { print $2 }')
    kill "$P1" "$P2"; wait "$P1" "$P2" 2>/dev/null || true; P1= P2=
    j="$work/report.$round.$n/report.json"
    jq -r --arg r "$round" --arg n "$n" --arg t "${timeouts:-?}" \
      '"| \($r) | \($n) | \(.send.acked_per_s | floor) | \(.ack_latency.p50_ms) ms | \(.ack_latency.p99_ms) ms | \(.landing.missing // 0) | \($t) |"' "$j" 2>/dev/null ||
      echo "| $round | $n | (no report: $(tail -n 1 "$out")) | | | | |"
  done
done
echo
echo "machine: $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git describe --always --dirty); replica on the same host"
