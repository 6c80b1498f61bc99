#!/usr/bin/env bash
# bench-subscriber.sh — firehose's subscriber role against Telegraf (inputs.mqtt_consumer +
# outputs.postgresql), side by side in one run: the same Mosquitto, the same load generator
# (`firehose simulate`, QoS 1, without verification), the same box. Each consumer holds a
# persistent session at QoS 1. Printed as markdown tables ready for BENCHMARKS.md.
#
#   scripts/bench-subscriber.sh                      # 3 rounds
#   ROUNDS=1 DURATION=10s scripts/bench-subscriber.sh
#   CONSUMERS=telegraf PHASES="drain" scripts/bench-subscriber.sh
#
# For each round, each consumer in turn (the order alternates between rounds), three phases:
#   live   a fleet of DEVICES publishers (paho, QoS 1, persistent sessions) at RATE messages/s,
#          open loop, for DURATION: rows landed a second (rows over the time from the first
#          send to the last row landed), the publishers' PUBACK latency from Mosquitto, and
#          the consumer's own CPU per landed row (firehose: its process + redis-server + the
#          PostgreSQL backends of its database; Telegraf: its process + the backends of its
#          database) from bin/proccpu, from just before the fleet starts until every row
#          landed. Mosquitto's CPU is shown beside it, not counted: it serves both alike.
#   drain  the consumer stopped (SIGTERM), DRAIN messages published (QoS 1, DRAIN_RATE/s) and
#          queued by Mosquitto for its session, the consumer started: rows/s from its start
#          until every row landed, and its CPU per row meanwhile.
#   crash  a live run of CRASH_DURATION in which the consumer is SIGKILLed after KILL_AT s
#          and started again (same client id) RESTART_AFTER s (1) later; then lost rows
#          (acknowledged to a publisher by Mosquitto, never landed) and duplicated rows
#          (landed more than once), counted in the consumer's table by the message's unique
#          (device, seq). A consumer that has not reconnected within 15 s is left retrying
#          and counted after LAND_TIMEOUT.
#
# Every message is {"reading": x, "ts": "...", "seq": n, "battery": b} on
# bench/<f|t><round>/sim-<run>-<n>/readings: each consumer subscribes to its own prefix, so
# the session of the one not running queues nothing of the other's phases.
#
# Settings, the same for both where they mean the same:
#   Mosquitto  own process on a free loopback port, persistence true, max_queued_messages 0,
#              max_inflight_messages MOSQ_MAX_INFLIGHT, default 0 (no broker cap on
#              unacknowledged messages to a client: firehose asks for
#              --subscribe-receive-maximum in its MQTT 5 CONNECT, Telegraf's MQTT 3.1.1
#              client has only its own max_undelivered_messages)
#   firehose   serve --roles subscriber,bridge, defaults: --batch-size 5000, --batch-age 200ms,
#              4 shards; --subscribe-receive-maximum FH_RECEIVE_MAX (10000: Telegraf's
#              max_undelivered_messages; firehose's default is 1000); own redis-server
#              (AOF everysec)
#   Telegraf   built by scripts/telegraf.sh (TELEGRAF_VERSION, default v1.39.3);
#              agent metric_batch_size 5000, flush_interval 200ms, flush_jitter 0s,
#              metric_buffer_limit 10000 (its default); mqtt_consumer qos 1,
#              persistent_session true, client_id set, max_undelivered_messages 10000,
#              data_format json (ts as the time); outputs.postgresql defaults (COPY, one
#              connection, the table it creates: time, topic, reading, seq, battery — no index,
#              where firehose's readings has its primary key and (device_id, ts) index;
#              TELEGRAF_TABLE=indexed creates it beforehand with an id in a primary key
#              (id, time) and an index on (topic, time), as firehose's)
#   FH_TABLE   readings (default): firehose lands each message as a row of its readings
#              table (primary key, (device_id, ts) index, the other fields in jsonb payload);
#              typed: a mapping rule routes it to a typed table of Telegraf's shape instead
#              (docs/tables.md): bench_readings (time, device_id, reading, seq, battery), no
#              index, as outputs.postgresql creates its own
# Each consumer writes to a database of its own (firehose_bench_sub_<pid>,
# telegraf_bench_sub_<pid>), emptied (TRUNCATE) before each phase; both are dropped at the end.
#
# Before each measured phase the box must be quiet: the 1-minute load under QUIET_LOAD
# (1.5), polled every 30 s, with QUIET_WAIT s (1200) of waiting in all over the run; a phase
# started on a busy box says so (the load each phase started at is in the tables). The
# previous phase's own load counts too: a phase often waits a minute for it to decay.
# Traffic goes to 127.0.0.1 only; every run is bounded (DURATION, LAND_TIMEOUT); everything
# started is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONSUMERS=${CONSUMERS:-"firehose telegraf"}
PHASES=${PHASES:-"live drain crash"}
DEVICES=${DEVICES:-500}
RATE=${RATE:-5000}
DURATION=${DURATION:-30s}
DRAIN=${DRAIN:-100000}
DRAIN_RATE=${DRAIN_RATE:-5000}
CRASH_DURATION=${CRASH_DURATION:-20s}
KILL_AT=${KILL_AT:-8}
RESTART_AFTER=${RESTART_AFTER:-1}
LAND_TIMEOUT=${LAND_TIMEOUT:-180}
QUIET_LOAD=${QUIET_LOAD:-1.5}
QUIET_WAIT=${QUIET_WAIT:-1200}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
MOSQ_MAX_INFLIGHT=${MOSQ_MAX_INFLIGHT:-0}
TELEGRAF_TABLE=${TELEGRAF_TABLE:-own}
FH_TABLE=${FH_TABLE:-readings}
FH_RECEIVE_MAX=${FH_RECEIVE_MAX:-10000}
for c in $CONSUMERS; do [[ $c == firehose || $c == telegraf ]] || { echo "unknown consumer $c (firehose, telegraf)" >&2; exit 2; }; done
[[ $TELEGRAF_TABLE == own || $TELEGRAF_TABLE == indexed ]] || { echo "TELEGRAF_TABLE=$TELEGRAF_TABLE: own or indexed" >&2; exit 2; }
[[ $FH_TABLE == readings || $FH_TABLE == typed ]] || { echo "FH_TABLE=$FH_TABLE: readings or typed" >&2; exit 2; }
for p in $PHASES; do [[ $p == live || $p == drain || $p == crash ]] || { echo "unknown phase $p (live, drain, crash)" >&2; exit 2; }; done
command -v jq >/dev/null || { echo "jq is not installed: apt-get install -y jq" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is not installed: scripts/services.sh ensure installs it" >&2; exit 1; }
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || { echo "mosquitto is not installed: scripts/testtools.sh ensure installs it" >&2; exit 1; }
scripts/services.sh ensure
go build -o bin/firehose ./cmd/firehose
go build -o bin/proccpu ./internal/benchtools/proccpu
TELEGRAF=
[[ " $CONSUMERS " == *" telegraf "* ]] && TELEGRAF=$(scripts/telegraf.sh)

# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh
bench_start firehose_bench_sub
REDIS_PID=$(cat "$work/redis.pid")
TDB=telegraf_bench_sub_$$
CONSUMER_PID= CPU_PID= SIM_PID= MOSQ_PID=
cleanup() {
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
  [ -n "$CPU_PID" ] && kill "$CPU_PID" 2>/dev/null || true
  [ -n "$CONSUMER_PID" ] && { kill "$CONSUMER_PID" 2>/dev/null || true; wait "$CONSUMER_PID" 2>/dev/null || true; }
  [ -n "$MOSQ_PID" ] && { kill "$MOSQ_PID" 2>/dev/null || true; wait "$MOSQ_PID" 2>/dev/null || true; }
  psql -h 127.0.0.1 -d postgres -qc "DROP DATABASE IF EXISTS $TDB WITH (FORCE)" >/dev/null 2>&1 || true
  bench_cleanup
}
trap cleanup EXIT
TPG="postgres://127.0.0.1:5432/$TDB?sslmode=disable"
PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -d postgres -qc "DROP DATABASE IF EXISTS $TDB WITH (FORCE)" -qc "CREATE DATABASE $TDB" >/dev/null
if [ "$TELEGRAF_TABLE" = indexed ]; then
  # The table outputs.postgresql would create (JSON numbers are floats, the topic a tag), with
  # what firehose's readings has beside it: a generated id in the primary key with the time,
  # and an index on (device, time).
  psql -h 127.0.0.1 -d "$TDB" -qc "CREATE TABLE readings (time timestamptz NOT NULL, topic text,
    reading double precision, seq double precision, battery double precision,
    id bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000), PRIMARY KEY (id, time))" \
    -qc "CREATE INDEX readings_topic_time_idx ON readings (topic, time)" >/dev/null
fi
bin/firehose migrate --postgres "$PG" >/dev/null

MPORT=$(free_port)
MQTT="tcp://127.0.0.1:$MPORT"
mkdir -p "$work/mosquitto"
cat >"$work/mosquitto.conf" <<CONF
listener $MPORT 127.0.0.1
allow_anonymous true
user $(id -un)
persistence true
persistence_location $work/mosquitto/
max_queued_messages 0
max_inflight_messages $MOSQ_MAX_INFLIGHT
log_dest file $work/mosquitto.log
log_type error
log_type warning
CONF
"$MOSQUITTO" -c "$work/mosquitto.conf" 2>>"$work/mosquitto.log" & MOSQ_PID=$!
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$MPORT") 2>/dev/null && break; sleep 0.1; done
MOSQ_VERSION=$({ "$MOSQUITTO" -h 2>&1 || true; } | awk 'NR == 1 { print $3 }')

# Each round has sessions and topics of its own (client ids <fh|tg>-bench-<pid>-<round>,
# topics bench/<f|t><round>/...): a session an earlier round left behind queues nothing
# of the later ones, and a round starts with no backlog whatever the one before left.
# set_round R: sets the round's client ids and topic prefixes, and writes Telegraf's config.
set_round() {
  FH_CLIENT=fh-bench-$$-$1 TG_CLIENT=tg-bench-$$-$1
  FH_PREFIX=bench/f$1 TG_PREFIX=bench/t$1
  # firehose's config: with FH_TABLE=typed, the rule that routes the round's messages to a
  # table of Telegraf's shape.
  : >"$work/firehose.yaml"
  if [ "$FH_TABLE" = typed ]; then cat >"$work/firehose.yaml" <<CONF
rules:
  - name: bench
    topic: $FH_PREFIX/{device_id}/readings
    time: ts
    table: bench_readings
    columns:
      - {name: time,      type: timestamptz,      source: time}
      - {name: device_id, type: text,             source: device}
      - {name: reading,   type: double precision, path: reading}
      - {name: seq,       type: bigint,           path: seq}
      - {name: battery,   type: double precision, path: battery}
    unknown: ignore
CONF
  fi
  cat >"$work/telegraf.conf" <<CONF
[agent]
  interval = "10s"
  metric_batch_size = 5000
  metric_buffer_limit = 10000
  flush_interval = "200ms"
  flush_jitter = "0s"
  omit_hostname = true
  logfile = "$work/telegraf.log"

[[inputs.mqtt_consumer]]
  servers = ["$MQTT"]
  topics = ["$TG_PREFIX/+/readings"]
  qos = 1
  persistent_session = true
  client_id = "$TG_CLIENT"
  max_undelivered_messages = 10000
  name_override = "readings"
  data_format = "json"
  json_time_key = "ts"
  json_time_format = "2006-01-02T15:04:05.999999999Z07:00"

[[outputs.postgresql]]
  connection = "$TPG"
CONF
}


now() { date +%s.%N; }
# n 1234567.8 -> 1,234,568
n() { printf '%.0f' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
ms() { awk -v v="$1" 'BEGIN { if (v == "-" || v == "") print "-"; else if (v < 10) printf "%.2f ms\n", v; else printf "%.1f ms\n", v }'; }

# quiet: waits for the 1-minute load to fall under QUIET_LOAD, polling every 30 s, while the
# run's waiting so far (WAITED) is under QUIET_WAIT; sets LOAD1 (the load when the phase
# started) and BUSY (non-empty when it had not fallen). The budget is for the whole run: on a
# box that stays busy, the first phase waits it out and the others start at once.
WAITED=0 BUSY_PHASES=0
quiet() {
  BUSY=
  while :; do
    LOAD1=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$LOAD1" -v q="$QUIET_LOAD" 'BEGIN { exit !(l < q) }' && return 0
    if [ "$WAITED" -ge "$QUIET_WAIT" ]; then
      BUSY=1 BUSY_PHASES=$((BUSY_PHASES + 1))
      echo "  load $LOAD1 >= $QUIET_LOAD, ${QUIET_WAIT}s of waiting used up: measuring anyway" >&2
      return 0
    fi
    echo "  load $LOAD1 >= $QUIET_LOAD: waiting (${WAITED}s of ${QUIET_WAIT}s used)" >&2
    sleep 30
    WAITED=$((WAITED + 30))
  done
}

# The consumer's database, its table and how a row's message is named.
db_of() { if [ "$1" = firehose ]; then echo "$DB"; else echo "$TDB"; fi; }
table_of() { if [ "$1" = firehose ] && [ "$FH_TABLE" = typed ]; then echo bench_readings; else echo readings; fi; }
key_of() {
  if [ "$1" = telegraf ]; then echo "topic, seq"
  elif [ "$FH_TABLE" = typed ]; then echo "device_id, seq"
  else echo "device_id, payload->>'seq'"; fi
}
# of_run C RUN: the SQL condition on C's rows of a simulate run (devices sim-RUN-<n>): a
# consumer stopped with SIGTERM may get an earlier phase's unacknowledged messages again.
of_run() { if [ "$1" = firehose ]; then echo "device_id LIKE 'sim-$2-%'"; else echo "topic LIKE '$TG_PREFIX/sim-$2-%'"; fi; }
sql() { PGAPPNAME=$BENCH_VERIFY_APP psql -h 127.0.0.1 -d "$1" -tAqc "$2" 2>/dev/null; }
# rows C RUN: C's rows of RUN (0 while Telegraf has not created its table yet).
rows() { local r; r=$(sql "$(db_of "$1")" "SELECT count(*) FROM $(table_of "$1") WHERE $(of_run "$1" "$2")") || r=0; echo "${r:-0}"; }
# counts C RUN: "rows distinct" of RUN in C's table.
counts() { sql "$(db_of "$1")" "SELECT count(*), count(DISTINCT ($(key_of "$1"))) FROM $(table_of "$1") WHERE $(of_run "$1" "$2")" | tr '|' ' '; }
empty() { sql "$(db_of "$1")" "TRUNCATE $(table_of "$1")" >/dev/null || true; }

# tg_connects: the connections Telegraf logged so far.
tg_connects() { local n; n=$(grep -c 'Connected \[' "$work/telegraf.log" 2>/dev/null) || true; echo "${n:-0}"; }
# start_consumer C: starts it (its session resumed after the first start); sets CONSUMER_PID
# and returns once it is connected to Mosquitto.
start_consumer() {
  if [ "$1" = firehose ]; then
    FH_ADMIN=$(free_port)
    # shellcheck disable=SC2086
    bin/firehose serve --config "$work/firehose.yaml" --roles subscriber,bridge --postgres "$PG" --redis "redis://127.0.0.1:$RPORT/0" \
      --redis-prefix bench --admin-addr "127.0.0.1:$FH_ADMIN" --log-level warn \
      --mqtt-topic "$FH_PREFIX/{device_id}/readings" --subscribe-broker "$MQTT" \
      --subscribe-client-id "$FH_CLIENT" --subscribe-qos 1 --subscribe-receive-maximum "$FH_RECEIVE_MAX" $EXTRA_FLAGS 2>>"$work/firehose.log" & CONSUMER_PID=$!
    for _ in $(seq 1 300); do
      curl -sf "http://127.0.0.1:$FH_ADMIN/metrics" 2>/dev/null | grep -q '^firehose_subscriber_connected 1' && return 0
      sleep 0.05
    done
    echo "firehose did not connect:" >&2; tail -n 20 "$work/firehose.log" >&2; return 1
  fi
  local before
  before=$(tg_connects)
  "$TELEGRAF" --config "$work/telegraf.conf" >>"$work/telegraf.out" 2>&1 & CONSUMER_PID=$!
  for _ in $(seq 1 300); do
    [ "$(tg_connects)" -gt "$before" ] && return 0
    sleep 0.05
  done
  echo "telegraf did not connect:" >&2; tail -n 20 "$work/telegraf.log" "$work/telegraf.out" >&2; return 1
}
stop_consumer() {
  kill -TERM "$CONSUMER_PID" 2>/dev/null || true
  wait "$CONSUMER_PID" 2>/dev/null || true
  CONSUMER_PID=
}

# simulate RUN RATE DURATION C: the fleet, QoS 1, on C's topic prefix; report in $work/RUN.
simulate() {
  local prefix=$FH_PREFIX
  [ "$4" = telegraf ] && prefix=$TG_PREFIX
  bin/firehose simulate --protocol mqtt --mqtt "$MQTT" --qos 1 --devices "$DEVICES" --rate "$2" \
    --duration "$3" --postgres "" --metrics off --run-id "$1" --report "$work/$1" \
    --mqtt-topic "$prefix/{device_id}/readings" >"$work/$1.out" 2>&1
}
# report RUN: "sent acked send_s p50 p99" of a simulate run.
report() { jq -r '[.send.sent, .send.acked, .send.send_s, .ack_latency.p50_ms, .ack_latency.p99_ms] | @tsv' "$work/$1/report.json"; }

# wait_rows C RUN N: until C's table holds N rows of RUN, LAND_TIMEOUT s at most (1: timed out).
wait_rows() {
  local deadline
  deadline=$(awk -v t="$(now)" -v d="$LAND_TIMEOUT" 'BEGIN { printf "%.0f", t + d }')
  while [ "$(rows "$1" "$2")" -lt "$3" ]; do
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.05
  done
}
# wait_settled C RUN: until C's row count of RUN stays put for 3 s (late redeliveries),
# LAND_TIMEOUT at most.
wait_settled() {
  local last=-1 cur stable=0
  for _ in $(seq 1 $((LAND_TIMEOUT * 2))); do
    cur=$(rows "$1" "$2")
    if [ "$cur" = "$last" ]; then stable=$((stable + 1)); else stable=0; fi
    [ "$stable" -ge 6 ] && return 0
    last=$cur
    sleep 0.5
  done
}
# cpu_start C OUT: proccpu over C's own processes and database (and Mosquitto, apart); the
# consumer's process only when it runs (CONSUMER_PID set).
cpu_start() {
  local args=()
  [ -n "$CONSUMER_PID" ] && args+=(-p "consumer=$CONSUMER_PID")
  [ "$1" = firehose ] && args+=(-p "redis=$REDIS_PID")
  args+=(-p "mosquitto=$MOSQ_PID")
  rm -f "$2.ready"
  bin/proccpu -out "$2" -ready "$2.ready" -db "$(db_of "$1")" -pg-loadgen-app "$BENCH_VERIFY_APP" "${args[@]}" & CPU_PID=$!
  for _ in $(seq 1 50); do [ -e "$2.ready" ] && break; sleep 0.1; done
}
cpu_stop() { kill -TERM "$CPU_PID" 2>/dev/null || true; wait "$CPU_PID" 2>/dev/null || true; CPU_PID=; }
# own_cpu C FILE: the consumer's own CPU seconds in a proccpu result.
own_cpu() {
  awk -v a="$(cpu_of "$2" consumer)" -v b="$(cpu_of "$2" redis)" -v c="$(cpu_of "$2" postgres)" 'BEGIN { print a + b + c }'
}
# stat_cpu PID: CPU seconds of a process since it started (utime+stime+cutime+cstime).
stat_cpu() { awk '{ sub(/.*\) /, ""); print ($12 + $13 + $14 + $15) / 100 }' "/proc/$1/stat"; }

# V[consumer,round,field]
declare -A V
# live C R
phase_live() {
  local c=$1 r=$2 run="r${2}${1:0:2}live" t1 t2 cpu sent acked send_s p50 p99 rows_ dist
  empty "$c"
  quiet; V[$c,$r,live_load]=$LOAD1${BUSY:+ (busy)}
  cpu="$work/$run.cpu"
  cpu_start "$c" "$cpu"
  simulate "$run" "$RATE" "$DURATION" "$c" || { echo "simulate failed:" >&2; tail -n 5 "$work/$run.out" >&2; }
  t1=$(now)
  read -r sent acked send_s p50 p99 < <(report "$run")
  wait_rows "$c" "$run" "$acked" || echo "  $c live: not every row landed in ${LAND_TIMEOUT}s" >&2
  t2=$(now)
  cpu_stop
  read -r rows_ dist < <(counts "$c" "$run")
  V[$c,$r,live_rps]=$(awk -v n="$dist" -v s="$send_s" -v a="$t1" -v b="$t2" 'BEGIN { printf "%.0f", n / (s + b - a) }')
  V[$c,$r,live_lag]=$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.2f", b - a }')
  V[$c,$r,live_acked]=$acked V[$c,$r,live_rows]=$rows_ V[$c,$r,live_p50]=$p50 V[$c,$r,live_p99]=$p99
  V[$c,$r,live_us]=$(us_per "$(own_cpu "$c" "$cpu")" "$rows_")
  V[$c,$r,live_us_proc]=$(us_per "$(cpu_of "$cpu" consumer)" "$rows_")
  V[$c,$r,live_us_redis]=$(us_per "$(cpu_of "$cpu" redis)" "$rows_")
  V[$c,$r,live_us_pg]=$(us_per "$(cpu_of "$cpu" postgres)" "$rows_")
  V[$c,$r,live_us_mosq]=$(us_per "$(cpu_of "$cpu" mosquitto)" "$rows_")
  echo "  live: $acked acked, $rows_ rows ($dist distinct), ${V[$c,$r,live_rps]} rows/s, ${V[$c,$r,live_us]} µs/row" >&2
}
# drain C R
phase_drain() {
  local c=$1 r=$2 run="r${2}${1:0:2}drain" t0 t1 t2 cpu sent acked rows_ dist own
  stop_consumer
  empty "$c"
  simulate "$run" "$DRAIN_RATE" "$(awk -v n="$DRAIN" -v r="$DRAIN_RATE" 'BEGIN { printf "%gs", n / r }')" "$c" ||
    { echo "simulate failed:" >&2; tail -n 5 "$work/$run.out" >&2; }
  read -r sent acked _ < <(report "$run")
  quiet; V[$c,$r,drain_load]=$LOAD1${BUSY:+ (busy)}
  cpu="$work/$run.cpu"
  cpu_start "$c" "$cpu"
  t0=$(now)
  start_consumer "$c"
  t1=$(now)
  wait_rows "$c" "$run" "$acked" || echo "  $c drain: not every row landed in ${LAND_TIMEOUT}s" >&2
  t2=$(now)
  own=$(stat_cpu "$CONSUMER_PID")
  cpu_stop
  read -r rows_ dist < <(counts "$c" "$run")
  V[$c,$r,drain_n]=$acked V[$c,$r,drain_rows]=$rows_
  V[$c,$r,drain_s]=$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.2f", b - a }')
  V[$c,$r,drain_conn]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  V[$c,$r,drain_rps_conn]=$(awk -v n="$dist" -v a="$t1" -v b="$t2" 'BEGIN { printf "%.0f", n / (b - a) }')
  V[$c,$r,drain_us_mosq]=$(us_per "$(cpu_of "$cpu" mosquitto)" "$rows_")
  V[$c,$r,drain_rps]=$(awk -v n="$dist" -v a="$t0" -v b="$t2" 'BEGIN { printf "%.0f", n / (b - a) }')
  # The consumer's process from its start: it was not running when proccpu began.
  V[$c,$r,drain_us]=$(us_per "$(awk -v o="$own" -v b="$(cpu_of "$cpu" redis)" -v p="$(cpu_of "$cpu" postgres)" 'BEGIN { print o + b + p }')" "$rows_")
  echo "  drain: $acked queued, $rows_ rows ($dist distinct) in ${V[$c,$r,drain_s]}s, ${V[$c,$r,drain_rps]} rows/s" >&2
}
# crash C R
phase_crash() {
  local c=$1 r=$2 run="r${2}${1:0:2}crash" sent acked rows_ dist
  empty "$c"
  quiet; V[$c,$r,crash_load]=$LOAD1${BUSY:+ (busy)}
  simulate "$run" "$RATE" "$CRASH_DURATION" "$c" & SIM_PID=$!
  sleep "$KILL_AT"
  kill -KILL "$CONSUMER_PID"
  wait "$CONSUMER_PID" 2>/dev/null || true
  sleep "$RESTART_AFTER"
  V[$c,$r,crash_stuck]=0
  if ! start_consumer "$c"; then
    # Still running and retrying: counted as it stands after LAND_TIMEOUT.
    V[$c,$r,crash_stuck]=1
    echo "  $c did not reconnect after the SIGKILL: see the log above; its rows are counted after ${LAND_TIMEOUT}s" >&2
  fi
  wait "$SIM_PID" || { echo "simulate failed:" >&2; tail -n 5 "$work/$run.out" >&2; }
  SIM_PID=
  read -r sent acked _ < <(report "$run")
  wait_rows "$c" "$run" "$acked" || true
  wait_settled "$c" "$run"
  read -r rows_ dist < <(counts "$c" "$run")
  # Every message was acknowledged by Mosquitto (sent = acked) unless the report says
  # otherwise: then lost is at most acked - distinct.
  V[$c,$r,crash_sent]=$sent V[$c,$r,crash_acked]=$acked V[$c,$r,crash_rows]=$rows_
  V[$c,$r,crash_lost]=$(awk -v a="$acked" -v d="$dist" 'BEGIN { print (a > d ? a - d : 0) }')
  V[$c,$r,crash_dup]=$((rows_ - dist))
  echo "  crash: $sent sent, $acked acked, $rows_ rows, $dist distinct: lost ${V[$c,$r,crash_lost]}, dup ${V[$c,$r,crash_dup]}" >&2
}

for round in $(seq 1 "$ROUNDS"); do
  order=$CONSUMERS
  [ $((round % 2)) = 0 ] && order=$(echo "$CONSUMERS" | tr ' ' '\n' | tac | tr '\n' ' ')
  set_round "$round"
  if [ "$FH_TABLE" = typed ]; then bin/firehose migrate --config "$work/firehose.yaml" --postgres "$PG" >/dev/null; fi
  for c in $order; do
    echo "round $round: $c" >&2
    start_consumer "$c"
    for p in $PHASES; do "phase_$p" "$c" "$round"; done
    [ -n "$CONSUMER_PID" ] && stop_consumer
  done
done

med() { local r vs=(); for r in $(seq 1 "$ROUNDS"); do vs+=("${V[$1,$r,$2]:--}"); done; median "${vs[@]}"; }
rng() { local r vs=(); for r in $(seq 1 "$ROUNDS"); do vs+=("${V[$1,$r,$2]:--}"); done; range "${vs[@]}"; }
sum() { local r s=0; for r in $(seq 1 "$ROUNDS"); do s=$((s + ${V[$1,$r,$2]:-0})); done; echo "$s"; }
maxof() { local r m=0 v; for r in $(seq 1 "$ROUNDS"); do v=${V[$1,$r,$2]:-0}; [ "$v" -gt "$m" ] && m=$v; done; echo "$m"; }
loads() { local r out=(); for r in $(seq 1 "$ROUNDS"); do out+=("${V[$1,$r,$2]:--}"); done; local IFS=/; echo "${out[*]}"; }
label() { if [ "$1" = firehose ]; then echo "firehose subscriber+bridge"; else echo "Telegraf $("$TELEGRAF" --version | awk '{ print $2 }')"; fi; }

for c in $CONSUMERS; do
  echo "### $(label "$c") (medians of $ROUNDS rounds, range in brackets)"
  echo
  echo "| phase | figure | value |"
  echo "|---|---|---|"
  if [[ " $PHASES " == *" live "* ]]; then
    echo "| live, $(n "$RATE")/s from $(n "$DEVICES") devices for $DURATION | rows landed/s | **$(n "$(med "$c" live_rps)")** ($(rng "$c" live_rps)) |"
    echo "| | last row landed after the fleet stopped | $(med "$c" live_lag) s ($(rng "$c" live_lag)) |"
    echo "| | publishers' PUBACK latency p50 / p99 | $(ms "$(med "$c" live_p50)") / $(ms "$(med "$c" live_p99)") |"
    echo "| | consumer's own CPU per landed row | **$(med "$c" live_us) µs** ($(rng "$c" live_us)) |"
    echo "| | of which its process / redis-server / PostgreSQL | $(med "$c" live_us_proc) / $(med "$c" live_us_redis) / $(med "$c" live_us_pg) µs |"
    echo "| | Mosquitto (not counted) | $(med "$c" live_us_mosq) µs |"
    echo "| | acknowledged / rows landed, all rounds | $(n "$(sum "$c" live_acked)") / $(n "$(sum "$c" live_rows)") |"
    echo "| | 1-minute load at start | $(loads "$c" live_load) |"
  fi
  if [[ " $PHASES " == *" drain "* ]]; then
    echo "| drain of $(n "$DRAIN") queued messages | rows/s from the consumer's start | **$(n "$(med "$c" drain_rps)")** ($(rng "$c" drain_rps)) |"
    echo "| | time to the last row | $(med "$c" drain_s) s ($(rng "$c" drain_s)) |"
    echo "| | of which until it was connected to Mosquitto | $(med "$c" drain_conn) s ($(rng "$c" drain_conn)) |"
    echo "| | rows/s from its connection | $(n "$(med "$c" drain_rps_conn)") ($(rng "$c" drain_rps_conn)) |"
    echo "| | Mosquitto's CPU per row meanwhile (not counted) | $(med "$c" drain_us_mosq) µs ($(rng "$c" drain_us_mosq)) |"
    echo "| | consumer's own CPU per row | $(med "$c" drain_us) µs ($(rng "$c" drain_us)) |"
    echo "| | queued / rows landed, all rounds | $(n "$(sum "$c" drain_n)") / $(n "$(sum "$c" drain_rows)") |"
    echo "| | 1-minute load at start | $(loads "$c" drain_load) |"
  fi
  if [[ " $PHASES " == *" crash "* ]]; then
    echo "| crash: SIGKILL after ${KILL_AT}s of a $CRASH_DURATION run at $(n "$RATE")/s, restart ${RESTART_AFTER} s later | sent / acknowledged by Mosquitto, all rounds | $(n "$(sum "$c" crash_sent)") / $(n "$(sum "$c" crash_acked)") |"
    echo "| | lost (not landed), all rounds | **$(sum "$c" crash_lost)** |"
    echo "| | rounds in which it did not reconnect within 15 s of its restart | $(sum "$c" crash_stuck) |"
    echo "| | duplicated rows: median (range), largest | **$(n "$(med "$c" crash_dup)")** ($(rng "$c" crash_dup)), $(n "$(maxof "$c" crash_dup)") |"
    echo "| | 1-minute load at start | $(loads "$c" crash_load) |"
  fi
  echo
done

if [[ " $CONSUMERS " == *" firehose "* && " $CONSUMERS " == *" telegraf "* ]]; then
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
  echo "### firehose / Telegraf (per-round ratios: median, range)"
  echo
  echo "| figure | firehose / Telegraf | goal |"
  echo "|---|---|---|"
  per_round() {
    local r out=()
    for r in $(seq 1 "$ROUNDS"); do out+=("$(ratio "${V[firehose,$r,$1]:--}" "${V[telegraf,$r,$1]:--}")"); done
    echo "**$(median "${out[@]}")** ($(range "${out[@]}"))"
  }
  [[ " $PHASES " == *" live "* ]] && echo "| consumer's own CPU per landed row, live | $(per_round live_us) | at most 0.6 |"
  [[ " $PHASES " == *" live "* ]] && echo "| rows landed/s, live | $(per_round live_rps) | (the fleet's fixed rate) |"
  [[ " $PHASES " == *" drain "* ]] && echo "| rows/s draining $(n "$DRAIN") queued messages | $(per_round drain_rps) | at least 2 |"
  [[ " $PHASES " == *" drain "* ]] && echo "| consumer's own CPU per row, drain | $(per_round drain_us) | |"
  echo
fi
echo "quiet box: 1-minute load under $QUIET_LOAD before each phase; waited ${WAITED}s in all (budget ${QUIET_WAIT}s); phases started on a busy box: $BUSY_PHASES."
echo "$(bench_stamp); Mosquitto $MOSQ_VERSION; $ROUNDS rounds, consumers alternating in order; fleet: firehose simulate, MQTT 3.1.1 QoS 1, $(n "$DEVICES") devices, on the same box; firehose's table: $FH_TABLE, --subscribe-receive-maximum $FH_RECEIVE_MAX; Telegraf's table: $TELEGRAF_TABLE."
