#!/usr/bin/env bash
# bench-growth.sh — does ingest slow down as readings grows? The bridge alone draining a
# backlog of N readings of DEVICES devices (as bench-drain.sh), ROUNDS times into an empty
# `readings`, then ROUNDS times after PREFILL rows of DAYS earlier days were written into
# it (one daily partition each, as a deployment running for DAYS days has them). Before
# every drain the current day's partition is emptied, so each drain starts from the same
# state of the partition it writes into and only the rest of the table differs.
#
#   scripts/bench-growth.sh                                  # 1M readings of 100k devices, 30M rows of 30 days, 3+3 rounds
#   N=300000 PREFILL=3000000 DAYS=3 ROUNDS=1 scripts/bench-growth.sh   # a quick look
#
# Heavy: PREFILL=30000000 writes ~6 GB into PostgreSQL (and as much WAL); on 2 cores the
# prefill takes several minutes. PostgreSQL runs with whatever settings it has (the figures
# in BENCHMARKS.md are with the defaults: shared_buffers 128MB, max_wal_size 1GB).
#
# Own redis-server on a free loopback port (AOF everysec) and own database
# firehose_growth, both removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
DEVICES=${DEVICES:-100000}
PREFILL=${PREFILL:-30000000}
DAYS=${DAYS:-30}
ROUNDS=${ROUNDS:-3}
SHARDS=${SHARDS:-4}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
FILL_VIA=${FILL_VIA:-producer}
scripts/services.sh ensure
go build -o bin/firehose ./cmd/firehose
go build -o bin/fill ./internal/benchtools/fill

# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh
bench_start firehose_growth
cleanup() {
  [ -n "${FH_PID:-}" ] && kill "$FH_PID" 2>/dev/null || true
  bench_cleanup
}
trap cleanup EXIT
sql() { psql -h 127.0.0.1 -d "$DB" -v ON_ERROR_STOP=1 -qtAc "$1"; }
committed() {
  curl -sf "http://127.0.0.1:$aport/metrics" 2>/dev/null |
    awk '$1 == "firehose_bridge_rows_committed_total" { printf "%d", $2; found = 1 } END { if (!found) print 0 }'
}

# drain LABEL: fill the backlog, run the bridge until it committed N rows, print a row.
drain() {
  redis-cli -p "$RPORT" flushall >/dev/null
  sql "TRUNCATE readings_p$(date -u +%Y%m%d), readings_default; DELETE FROM bridge_checkpoints"
  bin/fill -via "$FILL_VIA" -redis "redis://127.0.0.1:$RPORT/0" -prefix growth -shards "$SHARDS" -n "$N" -devices "$DEVICES" >&2
  sql "CHECKPOINT"
  aport=$(free_port)
  local start end
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  bin/firehose serve --roles bridge --postgres "$PG" --redis "redis://127.0.0.1:$RPORT/0" --redis-prefix growth \
    --shards "$SHARDS" --admin-addr "127.0.0.1:$aport" --log-level warn $EXTRA_FLAGS 2>>"$work/firehose.log" & FH_PID=$!
  while [ "$(committed)" -lt "$N" ]; do sleep 0.05; done
  end=$(date +%s.%N)
  kill -TERM "$FH_PID"; wait "$FH_PID" || true; FH_PID=
  local today
  today=$(sql "SELECT count(*) FROM readings_p$(date -u +%Y%m%d)")
  [ "$today" -eq "$N" ] || echo "rows in today's partition: $today, want $N" >&2
  awk -v l="$1" -v n="$N" -v a="$start" -v b="$end" -v t="$(sql "SELECT pg_size_pretty(pg_total_relation_size('readings_p$(date -u +%Y%m%d)'))")" \
    'BEGIN { d = b - a; printf "| %s | %d | %.2fs | %.0f | %s |\n", l, n, d, n / d, t }' | tee -a "$work/rows"
}

bin/firehose migrate --postgres "$PG" >/dev/null
# The first bridge start makes today's partition and the next three.
aport=$(free_port)
bin/firehose serve --roles bridge --postgres "$PG" --redis "redis://127.0.0.1:$RPORT/0" --redis-prefix growth \
  --shards "$SHARDS" --admin-addr "127.0.0.1:$aport" --log-level warn 2>>"$work/firehose.log" & FH_PID=$!
for _ in $(seq 1 100); do [ "$(sql "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass")" -ge 5 ] && break; sleep 0.1; done
kill -TERM "$FH_PID"; wait "$FH_PID" || true; FH_PID=

echo "| drain | rows | time | rows/s | today's partition after |"
echo "|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do drain "empty table, round $round"; done

per=$((PREFILL / DAYS))
t0=$(date +%s)
for d in $(seq "$DAYS" -1 1); do
  sql "DO \$\$ DECLARE lo timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '$d days'; BEGIN
    EXECUTE format('CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
      'readings_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD'), lo, lo + interval '1 day'); END \$\$"
  sql "INSERT INTO readings (device_id, ts, received_at, reading, payload)
    SELECT 'bench-' || (i % $DEVICES), t, t, i % 1000, jsonb_build_object('seq', i)
    FROM generate_series(0, $per - 1) AS i,
    LATERAL (SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '$d days' + i * (interval '1 day' / $per)) AS at(t)"
done
sql "VACUUM (ANALYZE) readings"
echo >&2 "prefilled $PREFILL rows over $DAYS days in $(( $(date +%s) - t0 ))s"
# The earlier days' partitions, today's left out (drain empties it).
today="readings_p$(date -u +%Y%m%d)"
size=$(sql "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits WHERE inhparent = 'readings'::regclass AND inhrelid <> '$today'::regclass")
idx=$(sql "SELECT pg_size_pretty(sum(pg_relation_size(i.indexrelid))) FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indexrelid
  WHERE h.inhparent = 'readings_device_ts_idx'::regclass AND i.indrelid <> '$today'::regclass")
rows=$(sql "SELECT count(*) FROM readings WHERE tableoid <> '$today'::regclass")
for round in $(seq 1 "$ROUNDS"); do drain "after $rows rows ($size, (device_id, ts) indexes $idx), round $round"; done

empty=$(awk -F'|' '/empty table/ { print $5 }' "$work/rows")
grown=$(awk -F'|' '/after/ { print $5 }' "$work/rows")
# shellcheck disable=SC2086
e=$(median $empty); g=$(median $grown)
echo
echo "medians: empty $e rows/s, after $rows rows $g rows/s: ratio $(awk -v e="$e" -v g="$g" 'BEGIN { printf "%.2f", g / e }')"
echo "machine: $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); N=$N DEVICES=$DEVICES PREFILL=$PREFILL DAYS=$DAYS FILL_VIA=$FILL_VIA; flags: ${EXTRA_FLAGS:-defaults}"
