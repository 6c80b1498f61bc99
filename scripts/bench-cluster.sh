#!/usr/bin/env bash
# bench-cluster.sh — firehose on a Redis Cluster against a single Redis node, same box:
# the 200-connection MQTT QoS 1 fleet (firehose simulate, closed loop, one publish in
# flight per connection) through a broker process and a bridge process, --shards 12,
# first on one redis-server, then on a cluster of 3 primaries (no replicas: the cost of
# the cluster itself), alternating, ROUNDS rounds of DURATION each. Prints throughput,
# ack latency, missing readings and CPU µs per landed reading of every process.
#
#   scripts/bench-cluster.sh                  # 2 rounds of 20 s
#   ROUNDS=3 DURATION=30s scripts/bench-cluster.sh
#
# Its own redis-servers (AOF everysec) on free loopback ports and its own database
# firehose_bench_cluster_<pid>, all removed at the end. Load goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-20s}
scripts/services.sh ensure
go build -o bin/firehose ./cmd/firehose
go build -o bin/proccpu ./internal/benchtools/proccpu
# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh
bench_start firehose_bench_cluster
cdir=$(mktemp -d)
CPORTS=()
for i in 1 2 3; do
  p=$(free_port)
  CPORTS+=("$p")
  mkdir -p "$cdir/$i"
  # its own bus port: the default (port + 10000) does not exist above 55535
  redis-server --port "$p" --cluster-port "$(free_port)" --bind 127.0.0.1 --dir "$cdir/$i" --appendonly yes --appendfsync everysec --save "" \
    --cluster-enabled yes --cluster-node-timeout 5000 --cluster-require-full-coverage no \
    --daemonize yes --logfile "$cdir/$i/redis.log" --pidfile "$cdir/$i/redis.pid"
done
P1= P2=
cleanup() {
  [ -n "$P1$P2" ] && kill $P1 $P2 2>/dev/null; wait 2>/dev/null || true
  for p in "${CPORTS[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  rm -rf "$cdir"
  bench_cleanup
}
trap cleanup EXIT
for p in "${CPORTS[@]}"; do
  for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create "${CPORTS[@]/#/127.0.0.1:}" --cluster-yes >"$cdir/create.log" 2>&1 || { cat "$cdir/create.log" >&2; exit 1; }
for _ in $(seq 100); do redis-cli -p "${CPORTS[0]}" cluster info | grep -q cluster_state:ok && break; sleep 0.2; done
wait_ready() { for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

echo "| round | Redis | readings/s | ack p50 | ack p99 | missing | broker µs | bridge µs | redis µs (all nodes) | PostgreSQL µs | **system µs/reading** |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
declare -A thr sys
for round in $(seq 1 "$ROUNDS"); do
  for mode in single cluster; do
    if [ "$mode" = single ]; then
      url="redis://127.0.0.1:$RPORT/0"
      rpids=("redis=$(cat "$work/redis.pid")")
    else
      url="redis://127.0.0.1:${CPORTS[0]}"
      rpids=()
      for i in 1 2 3; do rpids+=("redis$i=$(cat "$cdir/$i/redis.pid")"); done
    fi
    prefix="bc$round$mode"
    MP=$(free_port) AP=$(free_port) BP=$(free_port)
    bin/firehose serve --roles broker --postgres "$PG" --redis "$url" --redis-prefix "$prefix" --shards 12 --log-level error \
      --mqtt-addr "127.0.0.1:$MP" --admin-addr "127.0.0.1:$AP" 2>>"$work/broker.log" & P1=$!
    bin/firehose serve --roles bridge --postgres "$PG" --redis "$url" --redis-prefix "$prefix" --shards 12 --log-level error \
      --admin-addr "127.0.0.1:$BP" 2>>"$work/bridge.log" & P2=$!
    wait_ready "http://127.0.0.1:$AP/readyz" && wait_ready "http://127.0.0.1:$BP/readyz" || { cat "$work"/*.log >&2; exit 1; }
    out="$work/sim.$round.$mode.txt"
    cpu="$work/cpu.$round.$mode"
    bench_cpu_start "$cpu" "broker=$P1" "bridge=$P2" "${rpids[@]}"
    bin/firehose simulate --mqtt "tcp://127.0.0.1:$MP" --postgres "$PG&application_name=$BENCH_VERIFY_APP" \
      --protocol mqtt --qos 1 --rate 0 --devices 200 \
      --duration "$DURATION" --land-timeout 60s --report "$work/report.$round.$mode" >"$out" 2>&1 || { echo "round $round $mode FAILED" >&2; cat "$out" >&2; }
    bench_cpu_stop
    kill "$P1" "$P2"; wait "$P1" "$P2" 2>/dev/null || true; P1= P2=
    j="$work/report.$round.$mode/report.json"
    landed=$(jq -r '.landing.rows // 0' "$j" 2>/dev/null || echo 0)
    rcpu=0
    for rp in "${rpids[@]}"; do rcpu=$(awk -v a="$rcpu" -v b="$(cpu_of "$cpu" "${rp%%=*}")" 'BEGIN { print a + b }'); done
    total=$(awk -v a="$(cpu_of "$cpu" broker)" -v b="$(cpu_of "$cpu" bridge)" -v c="$rcpu" -v d="$(cpu_of "$cpu" postgres)" 'BEGIN { print a + b + c + d }')
    s=$(us_per "$total" "$landed")
    t=$(jq -r '.send.acked_per_s | floor' "$j" 2>/dev/null || echo 0)
    thr[$mode]="${thr[$mode]:-} $t"
    sys[$mode]="${sys[$mode]:-} $s"
    jq -r --arg r "$round" --arg m "$mode" --arg b "$(us_per "$(cpu_of "$cpu" broker)" "$landed")" \
      --arg g "$(us_per "$(cpu_of "$cpu" bridge)" "$landed")" --arg rd "$(us_per "$rcpu" "$landed")" \
      --arg pg "$(us_per "$(cpu_of "$cpu" postgres)" "$landed")" --arg s "$s" \
      '"| \($r) | \($m) | \(.send.acked_per_s | floor) | \(.ack_latency.p50_ms) ms | \(.ack_latency.p99_ms) ms | \(.landing.missing // 0) | \($b) | \($g) | \($rd) | \($pg) | **\($s)** |"' "$j" 2>/dev/null ||
      echo "| $round | $mode | (no report: $(tail -n 1 "$out")) | | | | | | | | |"
  done
done
echo
# shellcheck disable=SC2086
echo "cluster / single node, medians over the rounds: throughput $(awk -v a="$(median ${thr[cluster]})" -v b="$(median ${thr[single]})" 'BEGIN { printf "%.2f", a / b }')x, system CPU per reading $(awk -v a="$(median ${sys[cluster]})" -v b="$(median ${sys[single]})" 'BEGIN { printf "%.2f", a / b }')x"
bench_stamp
