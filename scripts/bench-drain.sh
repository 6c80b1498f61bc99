#!/usr/bin/env bash
# bench-drain.sh — the bridge alone draining a pre-filled backlog into `readings`
# (with its primary key and (device_id, ts) index), in rows/s; and, in the same round,
# the ceiling: raw pgx CopyFrom of the same number of rows from memory, 2 connections,
# batches of 5,000, into a fresh `readings`.
#
#   scripts/bench-drain.sh                     # 1,000,000 readings, 3 rounds
#   N=300000 ROUNDS=1 EXTRA_FLAGS="--batch-size 2000" scripts/bench-drain.sh
#   FILL_VIA=xadd scripts/bench-drain.sh       # a backlog of one v1 entry per reading
#
# The backlog is filled as the edges write it (FILL_VIA=producer, the default: batch
# entries, 200 callers with one reading in flight each), or with one entry per reading
# (FILL_VIA=xadd, as builds before batch entries wrote).
#
# Own redis-server on a free loopback port (AOF everysec) and own database
# firehose_bench, both removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
SHARDS=${SHARDS:-4}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
FILL_VIA=${FILL_VIA:-producer}
scripts/services.sh ensure
go build -o bin/firehose ./cmd/firehose
go build -o bin/fill ./internal/benchtools/fill
go build -o bin/copy ./internal/benchtools/copy

# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh
bench_start firehose_bench
cleanup() {
  [ -n "${FH_PID:-}" ] && kill "$FH_PID" 2>/dev/null || true
  bench_cleanup
}
trap cleanup EXIT
rows() { psql -h 127.0.0.1 -d "$DB" -tAc "SELECT count(*) FROM readings"; }
committed() {
  curl -sf "http://127.0.0.1:$aport/metrics" 2>/dev/null |
    awk '$1 == "firehose_bridge_rows_committed_total" { printf "%d", $2; found = 1 } END { if (!found) print 0 }'
}

echo "| round | what | rows | time | rows/s |"
echo "|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  bench_db
  bin/firehose migrate --postgres "$PG" >/dev/null
  redis-cli -p "$RPORT" flushall >/dev/null
  bin/fill -via "$FILL_VIA" -redis "redis://127.0.0.1:$RPORT/0" -prefix drain -shards "$SHARDS" -n "$N" >&2
  aport=$(free_port)
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  bin/firehose serve --roles bridge --postgres "$PG" --redis "redis://127.0.0.1:$RPORT/0" --redis-prefix drain \
    --shards "$SHARDS" --admin-addr "127.0.0.1:$aport" --log-level warn $EXTRA_FLAGS 2>"$work/firehose.log" & FH_PID=$!
  # Watch the bridge's own counter: polling count(*) would load PostgreSQL.
  while [ "$(committed)" -lt "$N" ]; do sleep 0.05; done
  end=$(date +%s.%N)
  [ "$(rows)" -eq "$N" ] || echo "rows in readings: $(rows), want $N" >&2
  kill -TERM "$FH_PID"; wait "$FH_PID" || true; FH_PID=
  awk -v r="$round" -v n="$N" -v s="$SHARDS" -v a="$start" -v b="$end" \
    'BEGIN { d = b - a; printf "| %d | bridge drain, %d shards | %d | %.2fs | %.0f |\n", r, s, n, d, n / d }'

  bench_db
  bin/firehose migrate --postgres "$PG" >/dev/null
  out=$(bin/copy -postgres "$PG" -n "$N" -conns 2 -batch 5000)
  echo "$out" >&2
  awk -v r="$round" -v n="$N" '/copied/ { t = $5; gsub(/[()]/, "", $6); printf "| %d | raw pgx CopyFrom, 2 conns | %d | %s | %s |\n", r, n, t, $6 }' <<<"$out"
done
echo
echo "machine: $(nproc) cores, $(date -u +%Y-%m-%d); flags: ${EXTRA_FLAGS:-defaults}; Redis AOF everysec"
