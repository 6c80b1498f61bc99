#!/usr/bin/env bash
# bench.sh — the standard scenarios of `firehose simulate` against a fresh stack, printed
# as a markdown table ready for BENCHMARKS.md (make bench).
#
#   scripts/bench.sh                          # every scenario, 30 s each
#   DURATION=10s scripts/bench.sh             # shorter
#   SCENARIOS="seed mqtt-qos1" scripts/bench.sh
#   EXTRA_FLAGS="--batch-size 2000" scripts/bench.sh     # any firehose serve flag
#   REPORTS=bench-reports scripts/bench.sh    # keep each scenario's report.html/json there
#
# Scenarios (each a run of its own, devices sim-<run id>-<n>, verified in PostgreSQL):
#   seed       HTTP POST /readings/fast, closed loop, 100 concurrent clients: the seed's
#              Locust test (100 users, no wait), side by side with its 1,200 req/s, p50 36 ms,
#              p99 98 ms
#   fast-open  HTTP POST /readings/fast, open loop at FAST_RATE readings/s, 1,000 devices:
#              latency at a fixed load, counted from each reading's intended send time
#   v1-batch   HTTP POST /v1/readings, 100 readings a request, closed loop, 32 clients
#   mqtt-qos0  MQTT QoS 0, 1,000 devices (one connection each), open loop at QOS0_RATE/s:
#              at most once, so what matters is the share that lands at a given rate
#   mqtt-qos1  MQTT QoS 1, 1,000 devices, closed loop (PUBACK only once durable in Redis)
#   mqtt-qos1-open
#              MQTT QoS 1, 1,000 devices, open loop at QOS1_RATE/s: the ack latency at a
#              fixed load below saturation
#   alone-qos0, alone-qos1
#              the same two fleets against mochi alone, its hook only counting
#              (internal/benchtools/mochicount: no decoding, no Redis, no PostgreSQL), so the
#              cost of durability shows beside them; nothing is verified for these
# The MQTT scenarios need the broker role (firehose serve --mqtt-addr); without it they
# are listed as skipped.
#
# It starts its own redis-server (AOF on, appendfsync everysec, as in production) on a
# free loopback port and uses its own database firehose_bench_sim; both are removed at the
# end. firehose serve runs every role in one process on free loopback ports. Load goes to
# 127.0.0.1 only, for DURATION per scenario.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30s}
SCENARIOS=${SCENARIOS:-"seed fast-open v1-batch mqtt-qos0 alone-qos0 mqtt-qos1 alone-qos1 mqtt-qos1-open"}
FAST_RATE=${FAST_RATE:-5000}
QOS0_RATE=${QOS0_RATE:-10000}
QOS1_RATE=${QOS1_RATE:-5000}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
command -v jq >/dev/null || { echo "jq is not installed: apt-get install -y jq" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is not installed: scripts/services.sh ensure installs it" >&2; exit 1; }
scripts/services.sh ensure
go build -o bin/firehose ./cmd/firehose
go build -o bin/mochicount ./internal/benchtools/mochicount

# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh
bench_start firehose_bench_sim
REPORTS=${REPORTS:-$work/reports}
cleanup() {
  if [ -n "${FH_PID:-}" ]; then kill -TERM "$FH_PID" 2>/dev/null || true; wait "$FH_PID" 2>/dev/null || true; fi
  if [ -n "${ALONE_PID:-}" ]; then kill -TERM "$ALONE_PID" 2>/dev/null || true; wait "$ALONE_PID" 2>/dev/null || true; fi
  bench_cleanup
}
trap cleanup EXIT

HPORT=$(free_port)
serve_args=(--postgres "$PG" --redis "redis://127.0.0.1:$RPORT/0" --redis-prefix bench
  --http-addr "127.0.0.1:$HPORT" --log-level warn)
MQTT=
serve_help=$(bin/firehose serve --help 2>&1 || true)
if grep -q -- '--mqtt-addr' <<<"$serve_help"; then
  MPORT=$(free_port)
  MQTT="tcp://127.0.0.1:$MPORT"
  serve_args+=(--mqtt-addr "127.0.0.1:$MPORT")
fi
# shellcheck disable=SC2086
bin/firehose serve "${serve_args[@]}" $EXTRA_FLAGS 2>"$work/firehose.log" & FH_PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HPORT/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$HPORT/readyz" >/dev/null || { echo "firehose did not start:"; cat "$work/firehose.log"; exit 1; }

# scenario NAME -> its simulate flags and its description
scenario() {
  case "$1" in
    seed)      echo "--endpoint fast --rate 0 --devices 100 --concurrency 100|HTTP /readings/fast, closed loop, 100 clients" ;;
    fast-open) echo "--endpoint fast --rate $FAST_RATE --devices 1000|HTTP /readings/fast, open loop $(n "$FAST_RATE")/s, 1,000 devices" ;;
    v1-batch)  echo "--endpoint v1 --batch 100 --rate 0 --devices 1000 --concurrency 32|HTTP /v1/readings ×100, closed loop, 32 clients" ;;
    mqtt-qos0) echo "--protocol mqtt --qos 0 --rate $QOS0_RATE --devices 1000|MQTT QoS 0, 1,000 devices, open loop $(n "$QOS0_RATE")/s" ;;
    mqtt-qos1) echo "--protocol mqtt --qos 1 --rate 0 --devices 1000|MQTT QoS 1, 1,000 devices, closed loop" ;;
    mqtt-qos1-open) echo "--protocol mqtt --qos 1 --rate $QOS1_RATE --devices 1000|MQTT QoS 1, 1,000 devices, open loop $(n "$QOS1_RATE")/s" ;;
    alone-qos0) echo "--protocol mqtt --qos 0 --rate $QOS0_RATE --devices 1000|mochi alone (hook only counts), MQTT QoS 0, 1,000 devices, open loop $(n "$QOS0_RATE")/s" ;;
    alone-qos1) echo "--protocol mqtt --qos 1 --rate 0 --devices 1000|mochi alone (hook only counts), MQTT QoS 1, 1,000 devices, closed loop" ;;
    *) return 1 ;;
  esac
}

# n 1234567.8 -> 1,234,568
n() { printf '%.0f' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
# ms 12.345 -> "12.3 ms" (or "-" for 0)
ms() { awk -v v="$1" 'BEGIN { if (v == 0) print "-"; else if (v < 10) printf "%.2f ms\n", v; else if (v < 100) printf "%.1f ms\n", v; else printf "%.0f ms\n", v }'; }

rows=()
failed=0
seed_line=
for name in $SCENARIOS; do
  spec=$(scenario "$name") || { echo "unknown scenario $name (seed fast-open v1-batch mqtt-qos0 alone-qos0 mqtt-qos1 alone-qos1 mqtt-qos1-open)" >&2; exit 2; }
  args=${spec%%|*}
  what=${spec#*|}
  if [[ $name == mqtt-* || $name == alone-* ]] && [ -z "$MQTT" ]; then
    rows+=("| $name | $what | skipped: firehose serve has no --mqtt-addr (broker role not built) | | | | | | | | |")
    continue
  fi
  target=(--http "http://127.0.0.1:$HPORT" --mqtt "${MQTT:-tcp://127.0.0.1:1}" --postgres "$PG" --metrics "http://127.0.0.1:$HPORT/metrics")
  if [[ $name == alone-* ]]; then
    if [ -z "${ALONE_PID:-}" ]; then
      APORT=$(free_port)
      bin/mochicount -addr "127.0.0.1:$APORT" -http "127.0.0.1:$(free_port)" >"$work/mochicount.log" 2>&1 & ALONE_PID=$!
      sleep 0.5
    fi
    target=(--mqtt "tcp://127.0.0.1:$APORT" --postgres "" --metrics off)
  fi
  # shellcheck disable=SC2086
  if ! bin/firehose simulate "${target[@]}" \
      --duration "$DURATION" --report "$REPORTS/$name" --land-timeout 120s $args >"$work/$name.txt" 2>&1; then
    failed=1
    echo "scenario $name FAILED:" >&2
    cat "$work/$name.txt" >&2
  fi
  j="$REPORTS/$name/report.json"
  if [ ! -f "$j" ]; then
    rows+=("| $name | $what | did not run: $(tail -n 1 "$work/$name.txt") | | | | | | | | |")
    continue
  fi
  # QoS 0 has no acknowledgements: its rate is what was written, its latency the write's.
  read -r rate p50 p99 e50 e99 sent acked rows_ missing dups q0 q0l cpu cores ok < <(jq -r '[
      (if .send.qos0 == .send.sent then .send.sent_per_s else .send.acked_per_s end),
      .ack_latency.p50_ms, .ack_latency.p99_ms,
      (.landing.receipt_to_commit.p50_ms // 0), (.landing.receipt_to_commit.p99_ms // 0),
      .send.sent, .send.acked, (.landing.rows // 0), (.landing.missing // 0), (.landing.dup_once_acked // 0),
      .send.qos0, (.landing.qos0_landed // 0), .send.client_cpu_cores, .send.client_cores, .ok] | @tsv' "$j")
  if [ "$q0" -gt 0 ]; then
    acked_col="$(n "$q0l") of $(n "$q0") landed (QoS 0)"
  else
    acked_col="$(n "$acked")"
  fi
  verdict=$([ "$ok" = true ] && echo "ok" || echo "**FAILED**")
  rows+=("| $name | $what | **$(n "$rate")** | $(ms "$p50") | $(ms "$p99") | $(ms "$e50") | $(ms "$e99") | $(n "$sent") | $acked_col | $(n "$rows_") | $(n "$missing") / $(n "$dups") $verdict | $(printf '%.2f' "$cpu") of $cores |")
  if [ "$name" = seed ]; then
    seed_line=$(awk -v r="$rate" -v a="$p50" -v b="$p99" -v rs="$(n "$rate")" 'BEGIN { printf "seed scenario against the seed: %.1f× the throughput (%s vs 1,200 req/s), p50 %.1f× lower (%.1f vs 36 ms), p99 %.1f× lower (%.1f vs 98 ms).", r/1200, rs, 36/a, a, 98/b, b }')
  fi
done

echo "| scenario | load | readings/s | ack p50 | ack p99 | receipt→commit p50 | receipt→commit p99 | sent | acknowledged | rows landed | missing / dup. of once-acked | simulator CPU (cores) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
echo "| the seed (Python, 8-core laptop) | Locust, 100 users, /readings/fast | **1,200** | 36 ms | 98 ms | - | - | - | - | - | - | - |"
printf '%s\n' "${rows[@]}"
echo
[ -n "$seed_line" ] && echo "$seed_line"
echo "machine: $(nproc) cores, $(date -u +%Y-%m-%d), $DURATION a scenario, one firehose serve (every role) with default flags${EXTRA_FLAGS:+ and $EXTRA_FLAGS}, Redis AOF everysec, load generator on the same box."
echo "readings/s: acknowledged readings a second over the run (QoS 0: readings written); latencies from each request's intended send time; receipt→commit from PostgreSQL (received_at to committed_at) over the run's rows."
[ "${REPORTS#"$work"}" = "$REPORTS" ] && echo "reports: $REPORTS/<scenario>/report.html"
exit "$failed"
