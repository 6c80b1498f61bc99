#!/usr/bin/env bash
# bench.sh — the standard scenarios of `firehose simulate` against a fresh stack, ROUNDS
# rounds, printed as markdown tables ready for BENCHMARKS.md (make bench): throughput and
# latency, CPU microseconds per reading of every process from /proc accounting, and the
# ratios of firehose against mochi alone and the bare handler measured in the same rounds.
#
#   scripts/bench.sh                          # every scenario, 3 rounds of 30 s each
#   DURATION=10s ROUNDS=1 scripts/bench.sh    # shorter
#   SCENARIOS="mqtt-qos1-200 alone-qos1-200" scripts/bench.sh   # the issue-9 fleet only
#   EXTRA_FLAGS="--batch-size 2000" scripts/bench.sh     # any firehose serve flag
#   SPLIT=0 scripts/bench.sh                  # the scenario's roles in one process
#   REPORTS=bench-reports scripts/bench.sh    # keep each run's report.html/json there
#
# Scenarios (each a run of its own, devices sim-<run id>-<n>, verified in PostgreSQL):
#   seed       HTTP POST /readings/fast, closed loop, 100 concurrent clients: the seed's
#              Locust test (100 users, no wait), side by side with its 1,200 req/s, p50 36 ms,
#              p99 98 ms
#   bare-seed  the same clients against internal/benchtools/bare (a net/http handler that
#              decodes the body and answers: no validation, no Redis, no PostgreSQL)
#   fast-open  HTTP POST /readings/fast, open loop at FAST_RATE readings/s, 1,000 devices:
#              latency at a fixed load, counted from each reading's intended send time
#   v1-batch   HTTP POST /v1/readings, 100 readings a request, closed loop, 32 clients
#   mqtt-qos0  MQTT QoS 0, 1,000 devices (one connection each), open loop at QOS0_RATE/s:
#              at most once, so what matters is the share that lands at a given rate
#   mqtt-qos1  MQTT QoS 1, 1,000 devices, closed loop (PUBACK only once durable in Redis)
#   mqtt-qos1-200
#              MQTT QoS 1, 200 devices (paho clients, one connection each), closed loop: one
#              publish in flight per connection, the fleet of issue 9
#   mqtt-qos1-open
#              MQTT QoS 1, 1,000 devices, open loop at QOS1_RATE/s: the ack latency at a
#              fixed load below saturation
#   mqtt-telemetry
#              MQTT QoS 1, 200 devices, closed loop, --shape telemetry: a JSON message of 3
#              metrics under sim/{site}/{line}/{device}/telemetry, mapped by a rule (3 rows)
#   http-samples
#              HTTP /v1/readings?rule=sim-samples, --shape samples: uploads of 100 samples
#              {"device", "samples": [{"ts", "v", "seq"}, ...]}, closed loop, 32 clients
#   mqtt-typed MQTT QoS 1, 200 devices, closed loop, --shape typed: the telemetry message of
#              mqtt-telemetry, routed by its rule to the typed table sim_telemetry (one row a
#              message, columns temp real, pressure double precision, rpm integer, ...) instead of
#              3 readings rows; paired with mqtt-telemetry (CPU per message and bytes on disk
#              per message: table, indexes and TOAST of the rows the run added)
#   http-telemetry, http-typed
#              the same messages posted over HTTP as NDJSON, 100 a request, closed loop, 32
#              clients (rules sim-telemetry and sim-typed): the edge's cost a message is small,
#              so the rows' cost shows; paired like the MQTT two
#   mqtt-sparkplug
#              Sparkplug B, --shape sparkplug: 200 edge nodes with 2 devices each, 3 metrics
#              (Double, Float, UInt32) by alias, QoS 1, closed loop
#              The shape scenarios start firehose with --config deploy/simulate-rules.yaml
#              (the rules the shapes need), the others without it.
#   alone-qos0, alone-qos1, alone-qos1-200
#              the same fleets against mochi alone, its hook only counting
#              (internal/benchtools/mochicount: no decoding, no Redis, no PostgreSQL), so the
#              cost of durability shows beside them; nothing is verified for these
# The MQTT scenarios need the broker role (firehose serve --mqtt-addr); without it they
# are listed as skipped.
#
# Each scenario run starts the processes it measures and stops them after: firehose with
# one process per role (--roles httpgw or broker, and --roles bridge; SPLIT=0: both roles
# in one process), or mochicount, or bare. bin/proccpu wraps `firehose simulate` and
# reads /proc/PID/stat (utime+stime, plus reaped children) of each of them, of
# redis-server and of the PostgreSQL backends of the bench database (pg_stat_activity,
# datname = firehose_bench_sim_<pid>: the bridge's sessions, the edge's small pool, autovacuum
# workers), from the simulator's start to its exit (connect, send, landing, verify); the
# simulator's own verifying sessions (application_name bench-verify) are counted with
# the load generator, not with PostgreSQL; the simulator's CPU comes from its rusage.
# The cluster's shared background processes (walwriter, checkpointer) are not counted.
#
# It starts its own redis-server (AOF on, appendfsync everysec, as in production) on a
# free loopback port and uses its own database firehose_bench_sim_<pid>; both are removed at the
# end. Everything listens on free loopback ports. Load goes to 127.0.0.1 only, for
# DURATION per scenario run.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30s}
ROUNDS=${ROUNDS:-3}
ALL="seed bare-seed fast-open v1-batch mqtt-qos0 alone-qos0 mqtt-qos1 alone-qos1 mqtt-qos1-200 alone-qos1-200 mqtt-qos1-open mqtt-telemetry mqtt-typed http-telemetry http-typed http-samples mqtt-sparkplug"
SCENARIOS=${SCENARIOS:-$ALL}
FAST_RATE=${FAST_RATE:-5000}
QOS0_RATE=${QOS0_RATE:-10000}
QOS1_RATE=${QOS1_RATE:-5000}
SPLIT=${SPLIT:-1}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
command -v jq >/dev/null || { echo "jq is not installed: apt-get install -y jq" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is not installed: scripts/services.sh ensure installs it" >&2; exit 1; }
scripts/services.sh ensure
go build -o bin/firehose ./cmd/firehose
go build -o bin/mochicount ./internal/benchtools/mochicount
go build -o bin/bare ./internal/benchtools/bare
go build -o bin/proccpu ./internal/benchtools/proccpu

# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh
bench_start firehose_bench_sim
REPORTS=${REPORTS:-$work/reports}
PIDS=()
stop_all() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() { stop_all; bench_cleanup; }
trap cleanup EXIT
# With the rules: the shape typed's table sim_telemetry exists before any run.
bin/firehose migrate --postgres "$PG" --config deploy/simulate-rules.yaml >/dev/null
REDIS_PID=$(cat "$work/redis.pid")

MQTT_OK=
grep -q -- '--mqtt-addr' <<<"$(bin/firehose serve --help 2>&1 || true)" && MQTT_OK=1

# scenario NAME -> "target|simulate flags|description[|firehose serve flags]"; target is
# what serves it: http or mqtt (firehose), alone (mochicount), bare.
RULES="--config deploy/simulate-rules.yaml"
scenario() {
  case "$1" in
    seed)      echo "http|--endpoint fast --rate 0 --devices 100 --concurrency 100|HTTP /readings/fast, closed loop, 100 clients" ;;
    bare-seed) echo "bare|--endpoint fast --rate 0 --devices 100 --concurrency 100|bare net/http handler, same clients as seed" ;;
    fast-open) echo "http|--endpoint fast --rate $FAST_RATE --devices 1000|HTTP /readings/fast, open loop $(n "$FAST_RATE")/s, 1,000 devices" ;;
    v1-batch)  echo "http|--endpoint v1 --batch 100 --rate 0 --devices 1000 --concurrency 32|HTTP /v1/readings ×100, closed loop, 32 clients" ;;
    mqtt-qos0) echo "mqtt|--protocol mqtt --qos 0 --rate $QOS0_RATE --devices 1000|MQTT QoS 0, 1,000 devices, open loop $(n "$QOS0_RATE")/s" ;;
    mqtt-qos1) echo "mqtt|--protocol mqtt --qos 1 --rate 0 --devices 1000|MQTT QoS 1, 1,000 devices, closed loop" ;;
    mqtt-qos1-200) echo "mqtt|--protocol mqtt --qos 1 --rate 0 --devices 200|MQTT QoS 1, 200 connections, one publish in flight each" ;;
    mqtt-qos1-open) echo "mqtt|--protocol mqtt --qos 1 --rate $QOS1_RATE --devices 1000|MQTT QoS 1, 1,000 devices, open loop $(n "$QOS1_RATE")/s" ;;
    alone-qos0) echo "alone|--protocol mqtt --qos 0 --rate $QOS0_RATE --devices 1000|mochi alone, same fleet as mqtt-qos0" ;;
    alone-qos1) echo "alone|--protocol mqtt --qos 1 --rate 0 --devices 1000|mochi alone, same fleet as mqtt-qos1" ;;
    alone-qos1-200) echo "alone|--protocol mqtt --qos 1 --rate 0 --devices 200|mochi alone, same fleet as mqtt-qos1-200" ;;
    mqtt-telemetry) echo "mqtt|--protocol mqtt --qos 1 --rate 0 --devices 200 --shape telemetry --metric-count 3|MQTT QoS 1 telemetry, 3 metrics a message, 200 connections|$RULES" ;;
    mqtt-typed) echo "mqtt|--protocol mqtt --qos 1 --rate 0 --devices 200 --shape typed --metric-count 3|MQTT QoS 1 typed rows (sim_telemetry), 3 metrics a message, 200 connections|$RULES" ;;
    http-telemetry) echo "http|--shape telemetry --metric-count 3 --batch 100 --rate 0 --devices 1000 --concurrency 32|HTTP telemetry NDJSON ×100, 3 metrics a message, 32 clients|$RULES" ;;
    http-typed) echo "http|--shape typed --metric-count 3 --batch 100 --rate 0 --devices 1000 --concurrency 32|HTTP typed rows NDJSON ×100, 3 metrics a message, 32 clients|$RULES" ;;
    http-samples) echo "http|--shape samples --batch 100 --rate 0 --devices 1000 --concurrency 32|HTTP sample uploads ×100, closed loop, 32 clients|$RULES" ;;
    mqtt-sparkplug) echo "mqtt|--protocol mqtt --qos 1 --rate 0 --devices 200 --shape sparkplug --sparkplug-devices 2 --metric-count 3|Sparkplug B, 200 edge nodes × 2 devices, 3 metrics, QoS 1" ;;
    *) return 1 ;;
  esac
}
# pairs: a firehose scenario and its baseline in the same round.
PAIRS="seed:bare-seed mqtt-qos0:alone-qos0 mqtt-qos1:alone-qos1 mqtt-qos1-200:alone-qos1-200 mqtt-typed:mqtt-telemetry http-typed:http-telemetry"

# table_bytes: the bytes on disk of the rows' tables (every partition of readings and of
# sim_telemetry: heap, indexes, TOAST), for the bytes per message of a shape run.
table_bytes() {
  psql -h 127.0.0.1 -d "$DB" -Atc "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits
    WHERE inhparent IN ('readings'::regclass, coalesce(to_regclass('sim_telemetry'), 'readings'::regclass))"
}

# n 1234567.8 -> 1,234,568
n() { printf '%.0f' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
# ms 12.345 -> "12.3 ms" (or "-" for 0)
ms() { awk -v v="$1" 'BEGIN { if (v == "-" || v == 0) print "-"; else if (v < 10) printf "%.2f ms\n", v; else if (v < 100) printf "%.1f ms\n", v; else printf "%.0f ms\n", v }'; }

# wait_ready URL: until it answers (10 s at most).
wait_ready() {
  for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  return 1
}

# serve NAME ROLES ARGS...: starts firehose serve with ROLES; sets SERVED_PID.
serve() {
  local name=$1 roles=$2; shift 2
  # shellcheck disable=SC2086
  bin/firehose serve --roles "$roles" --postgres "$PG" --redis "redis://127.0.0.1:$RPORT/0" --redis-prefix bench \
    --log-level warn "$@" $SCENARIO_FLAGS $EXTRA_FLAGS 2>>"$work/firehose-$name.log" & SERVED_PID=$!
  PIDS+=("$SERVED_PID")
}

# start TARGET: starts what serves a scenario; sets TARGET_ARGS (simulate's target flags)
# and CPU_ARGS (proccpu's -p groups and -db).
start() {
  local port aport bport
  case "$1" in
    bare)
      port=$(free_port)
      bin/bare -addr "127.0.0.1:$port" 2>>"$work/bare.log" & PIDS+=("$!")
      for _ in $(seq 1 50); do curl -s -o /dev/null -X POST -d '{"id":1,"reading":1}' "http://127.0.0.1:$port/readings/fast" && break; sleep 0.1; done
      TARGET_ARGS=(--http "http://127.0.0.1:$port" --postgres "" --metrics off)
      CPU_ARGS=(-p "bare=$!")
      ;;
    alone)
      port=$(free_port) aport=$(free_port)
      bin/mochicount -addr "127.0.0.1:$port" -http "127.0.0.1:$aport" >>"$work/mochicount.log" 2>&1 & PIDS+=("$!")
      wait_ready "http://127.0.0.1:$aport/count"
      TARGET_ARGS=(--mqtt "tcp://127.0.0.1:$port" --postgres "" --metrics off)
      CPU_ARGS=(-p "mochi=$!")
      ;;
    http | mqtt)
      local edge=httpgw edge_args metrics
      port=$(free_port) bport=$(free_port)
      if [ "$1" = http ]; then
        edge_args=(--http-addr "127.0.0.1:$port")
        metrics="http://127.0.0.1:$port/metrics"
        TARGET_ARGS=(--http "http://127.0.0.1:$port")
      else
        edge=broker aport=$(free_port)
        edge_args=(--mqtt-addr "127.0.0.1:$port" --admin-addr "127.0.0.1:$aport")
        metrics="http://127.0.0.1:$aport/metrics"
        TARGET_ARGS=(--mqtt "tcp://127.0.0.1:$port")
      fi
      TARGET_ARGS+=(--postgres "$PG&application_name=$BENCH_VERIFY_APP" --metrics "$metrics")
      if [ "$SPLIT" = 1 ]; then
        serve "$edge" "$edge" "${edge_args[@]}"
        CPU_ARGS=(-p "$edge=$SERVED_PID")
        serve bridge bridge --admin-addr "127.0.0.1:$bport"
        CPU_ARGS+=(-p "bridge=$SERVED_PID")
        wait_ready "http://127.0.0.1:$bport/readyz" || { echo "the bridge did not start:" >&2; cat "$work/firehose-bridge.log" >&2; return 1; }
      else
        serve firehose "$edge,bridge" "${edge_args[@]}"
        CPU_ARGS=(-p "firehose=$SERVED_PID")
      fi
      wait_ready "${metrics%/metrics}/readyz" || { echo "firehose did not start:" >&2; cat "$work"/firehose-*.log >&2; return 1; }
      CPU_ARGS+=(-p "redis=$REDIS_PID" -db "$DB" -pg-loadgen-app "$BENCH_VERIFY_APP")
      ;;
  esac
}

# V[name,round,field]: every figure of every run.
declare -A V
failed=0
for round in $(seq 1 "$ROUNDS"); do
  for name in $SCENARIOS; do
    spec=$(scenario "$name") || { echo "unknown scenario $name ($ALL)" >&2; exit 2; }
    IFS='|' read -r target args _ SCENARIO_FLAGS <<<"$spec"
    if [[ $target == mqtt || $target == alone ]] && [ -z "$MQTT_OK" ]; then
      V[$name,$round,skip]="skipped: firehose serve has no --mqtt-addr (broker role not built)"
      continue
    fi
    echo "round $round: $name" >&2
    bytes_before=$(table_bytes)
    start "$target"
    cpu="$work/$name.$round.cpu"
    out="$work/$name.$round.txt"
    rep="$REPORTS/$name/r$round"
    # shellcheck disable=SC2086
    if ! bin/proccpu -out "$cpu" "${CPU_ARGS[@]}" -- bin/firehose simulate "${TARGET_ARGS[@]}" \
        --duration "$DURATION" --report "$rep" --land-timeout 120s $args >"$out" 2>&1; then
      failed=1
      echo "scenario $name (round $round) FAILED:" >&2
      cat "$out" >&2
    fi
    stop_all
    bytes_after=$(table_bytes)
    j="$rep/report.json"
    if [ ! -f "$j" ]; then
      V[$name,$round,skip]="did not run: $(tail -n 1 "$out")"
      continue
    fi
    # QoS 0 has no acknowledgements: its rate is what was written, its latency the write's,
    # and its CPU is per reading written.
    # readings/s counts the messages' values (a telemetry message of 3 metrics: 3), rows/s the
    # rows they land (a row per value, and one per Sparkplug birth and death); for one-value
    # readings both are acknowledged readings a second.
    read -r rate rrate p50 p99 e50 e99 sent acked rows_ missing dups q0 q0l ok < <(jq -r '[
        (if .send.qos0 == .send.sent then .send.sent_per_s else .send.readings_per_s end),
        (if .send.qos0 == .send.sent then .send.sent_per_s else .send.rows_per_s end),
        .ack_latency.p50_ms, .ack_latency.p99_ms,
        (.landing.receipt_to_commit.p50_ms // 0), (.landing.receipt_to_commit.p99_ms // 0),
        .send.sent, .send.readings_acked, (.landing.rows // 0), (.landing.missing // 0), (.landing.dup_once_acked // 0),
        .send.qos0, (.landing.qos0_landed // 0), .ok] | @tsv' "$j")
    for f in rate rrate p50 p99 e50 e99 sent acked rows_ missing dups q0 q0l ok; do V[$name,$round,$f]=${!f}; done
    count=$acked
    [ "$q0" -gt 0 ] && count=$sent
    V[$name,$round,count]=$count
    V[$name,$round,msgs]=$(jq -r '.send.acked' "$j")
    V[$name,$round,bytes]=$(awk -v a="$bytes_before" -v b="$bytes_after" -v m="${V[$name,$round,msgs]}" 'BEGIN { if (m > 0) printf "%.1f", (b - a) / m; else print "-" }')
    edge=0 edge_name=
    for g in broker httpgw firehose mochi bare; do
      c=$(cpu_of "$cpu" "$g")
      if grep -q "^$g " "$cpu"; then edge=$c edge_name=$g; fi
    done
    bridge=$(cpu_of "$cpu" bridge) redis=$(cpu_of "$cpu" redis) pg=$(cpu_of "$cpu" postgres)
    gen=$(awk -v a="$(cpu_of "$cpu" loadgen)" -v b="$(cpu_of "$cpu" postgres-loadgen)" 'BEGIN { print a + b }')
    total=$(awk -v a="$edge" -v b="$bridge" -v c="$redis" -v d="$pg" 'BEGIN { print a + b + c + d }')
    V[$name,$round,edge_name]=$edge_name
    V[$name,$round,wall]=$(cpu_of "$cpu" wall)
    for f in edge bridge redis pg total gen; do V[$name,$round,us_$f]=$(us_per "${!f}" "$count"); done
    grep -q '^bridge ' "$cpu" || V[$name,$round,us_bridge]=-  # SPLIT=0: in the edge's process
  done
done

# med NAME FIELD: the median of a field over the rounds that ran.
med() { local r vs=(); for r in $(seq 1 "$ROUNDS"); do vs+=("${V[$1,$r,$2]:--}"); done; median "${vs[@]}"; }
rng() { local r vs=(); for r in $(seq 1 "$ROUNDS"); do vs+=("${V[$1,$r,$2]:--}"); done; range "${vs[@]}"; }
sum() { local r s=0; for r in $(seq 1 "$ROUNDS"); do s=$((s + ${V[$1,$r,$2]:-0})); done; echo "$s"; }
ran() { local r; for r in $(seq 1 "$ROUNDS"); do [ -n "${V[$1,$r,rate]:-}" ] && return 0; done; return 1; }

echo "### Throughput and latency (medians of $ROUNDS rounds; sent, acknowledged and landed summed over the rounds)"
echo
echo "| scenario | load | readings/s (range) | rows/s | ack p50 | ack p99 | receipt→commit p50 | receipt→commit p99 | sent | acknowledged readings | rows landed | missing / dup. of once-acked |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
echo "| the seed (Python, 8-core laptop) | Locust, 100 users, /readings/fast | **1,200** | 1,200 | 36 ms | 98 ms | - | - | - | - | - | - |"
for name in $SCENARIOS; do
  what=$(scenario "$name" | cut -d'|' -f3)
  if ! ran "$name"; then echo "| $name | $what | ${V[$name,1,skip]:-did not run} | | | | | | | | | |"; continue; fi
  verdict=ok
  for r in $(seq 1 "$ROUNDS"); do [ "${V[$name,$r,ok]:-false}" = true ] || verdict="**FAILED**"; done
  if [[ $name == alone-* || $name == bare-* ]] && [ "$(sum "$name" q0)" -gt 0 ]; then
    acked_col="- (QoS 0)"
  elif [ "$(sum "$name" q0)" -gt 0 ]; then
    acked_col="$(n "$(sum "$name" q0l)") of $(n "$(sum "$name" q0)") landed (QoS 0)"
  else
    acked_col=$(n "$(sum "$name" acked)")
  fi
  landing="$(n "$(sum "$name" rows_)") | $(n "$(sum "$name" missing)") / $(n "$(sum "$name" dups)") $verdict"
  [[ $name == alone-* || $name == bare-* ]] && landing="- | -"
  rates=$(rng "$name" rate | awk -F- '{ for (i = 1; i <= NF; i++) { printf "%s%.0f", (i > 1 ? "-" : ""), $i } }' | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')
  echo "| $name | $what | **$(n "$(med "$name" rate)")** ($rates) | $(n "$(med "$name" rrate)") | $(ms "$(med "$name" p50)") | $(ms "$(med "$name" p99)") | $(ms "$(med "$name" e50)") | $(ms "$(med "$name" e99)") | $(n "$(sum "$name" sent)") | $acked_col | $landing |"
done
echo
echo "### CPU per reading, µs (medians of $ROUNDS rounds, /proc accounting over each simulate run)"
echo
# d FIELD: a CPU column of the scenario; a baseline has no bridge, Redis or PostgreSQL.
d() {
  if [[ $name == alone-* || $name == bare-* ]] && [[ $1 == us_bridge || $1 == us_redis || $1 == us_pg ]]; then echo -; else med "$name" "$1"; fi
}
echo "| scenario | readings/s | rows/s | edge process | edge | bridge | redis-server | PostgreSQL (bench db backends) | **system total** | load generator (simulate) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for name in $SCENARIOS; do
  ran "$name" || continue
  en=${V[$name,1,edge_name]:-}
  [ -z "$en" ] && en=${V[$name,2,edge_name]:-}
  case $en in
    broker) en="firehose broker" ;; httpgw) en="firehose httpgw" ;; firehose) en="firehose (edge+bridge, one process)" ;;
    mochi) en="mochicount" ;; bare) en="bare handler" ;;
  esac
  echo "| $name | $(n "$(med "$name" rate)") | $(n "$(med "$name" rrate)") | $en | $(d us_edge) | $(d us_bridge) | $(d us_redis) | $(d us_pg) | **$(d us_total)** | $(d us_gen) |"
done
echo
if ran mqtt-telemetry || ran mqtt-typed || ran http-telemetry || ran http-typed; then
  echo "### Per message: the narrow rows (*-telemetry, a row per metric) against a typed row (*-typed)"
  echo
  echo "| scenario | messages acknowledged/s | system CPU per message, µs | bytes on disk per message (table + indexes + TOAST) |"
  echo "|---|---|---|---|"
  for name in mqtt-telemetry mqtt-typed http-telemetry http-typed; do
    ran "$name" || continue
    cpm=() mps=()
    for r in $(seq 1 "$ROUNDS"); do
      [ -n "${V[$name,$r,rate]:-}" ] || continue
      cpm+=("$(awk -v u="${V[$name,$r,us_total]}" -v c="${V[$name,$r,count]}" -v m="${V[$name,$r,msgs]}" 'BEGIN { if (m > 0) printf "%.1f", u * c / m }')")
      mps+=("$(awk -v x="${V[$name,$r,rate]}" -v c="${V[$name,$r,count]}" -v m="${V[$name,$r,msgs]}" 'BEGIN { if (c > 0) printf "%.0f", x * m / c }')")
    done
    echo "| $name | $(n "$(median "${mps[@]}")") | $(median "${cpm[@]}") ($(range "${cpm[@]}")) | $(med "$name" bytes) ($(rng "$name" bytes)) |"
  done
  echo
fi
pairs_out=()
for pair in $PAIRS; do
  a=${pair%%:*} b=${pair#*:}
  [[ " $SCENARIOS " == *" $a "* && " $SCENARIOS " == *" $b "* ]] || continue
  cr=() tr=() rr=()
  for r in $(seq 1 "$ROUNDS"); do
    [ -n "${V[$a,$r,rate]:-}" ] && [ -n "${V[$b,$r,rate]:-}" ] || continue
    cr+=("$(awk -v x="${V[$a,$r,us_total]}" -v y="${V[$b,$r,us_total]}" 'BEGIN { if (y > 0) printf "%.2f", x / y }')")
    tr+=("$(awk -v x="${V[$a,$r,rate]}" -v y="${V[$b,$r,rate]}" 'BEGIN { if (y > 0) printf "%.2f", x / y }')")
    rr+=("$r")
  done
  [ "${#rr[@]}" -gt 0 ] || continue
  pairs_out+=("| $a / $b | **$(median "${cr[@]}")** ($(range "${cr[@]}")) | **$(median "${tr[@]}")** ($(range "${tr[@]}")) | ${#rr[@]} |")
done
if [ "${#pairs_out[@]}" -gt 0 ]; then
  echo "### Ratios against the baseline of the same round (median, range over the rounds)"
  echo
  echo "| firehose / baseline | system CPU per reading | throughput | rounds |"
  echo "|---|---|---|---|"
  printf '%s\n' "${pairs_out[@]}"
  echo
fi
if ran seed; then
  awk -v r="$(med seed rate)" -v a="$(med seed p50)" -v b="$(med seed p99)" -v rs="$(n "$(med seed rate)")" 'BEGIN { printf "seed scenario against the seed: %.1f× the throughput (%s vs 1,200 req/s), p50 %.1f× lower (%.1f vs 36 ms), p99 %.1f× lower (%.1f vs 98 ms).\n", r/1200, rs, 36/a, a, 98/b, b }'
fi
mode="one process per role (--roles httpgw or broker; --roles bridge)"
[ "$SPLIT" = 1 ] || mode="the scenario's roles in one process"
echo "$(bench_stamp); $ROUNDS rounds of $DURATION a scenario, scenarios alternating within each round; firehose serve: $mode, default flags${EXTRA_FLAGS:+ and $EXTRA_FLAGS}; Redis AOF everysec; load generator on the same box."
echo "readings/s: the numeric values of the acknowledged messages a second over the send phase (one-value readings: acknowledged readings; a telemetry message of 3 metrics: 3; a sample upload: its samples; Sparkplug: the metrics of BIRTH and DATA messages; QoS 0: readings written); rows/s: the rows those messages land a second (a row per value, plus one per Sparkplug birth and death); sent counts readings, in the shape scenarios the units of the simulator's ledger (telemetry and Sparkplug: messages; samples: samples). Latencies from each request's intended send time; receipt→commit from PostgreSQL (received_at to committed_at) over the run's rows."
echo "CPU per reading: CPU seconds of each process from the simulator's start to its exit (connect, send, landing, verify: idle time counts too, which weighs on open-loop and short runs), divided by the readings acknowledged (QoS 0: written); system total = edge + bridge + redis-server + PostgreSQL backends of the bench database (not the load generator); the load generator is simulate's own rusage plus its verifying PostgreSQL sessions."
[ "${REPORTS#"$work"}" = "$REPORTS" ] && echo "reports: $REPORTS/<scenario>/r<round>/report.html"
exit "$failed"
