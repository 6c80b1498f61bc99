#!/usr/bin/env bash
# bench-dedup-pg.sh — what deduplicating in PostgreSQL would cost at ingest, the
# alternative to --dedup's Redis sets (BENCHMARKS.md, "Deduplication"): N rows of the
# bridge's shape COPYed into the partitioned readings table, ROUNDS rounds, alternating:
#
#   copy        COPY into readings as the bridge does today (its one index, device_id, ts)
#   copy+uniq   the same COPY with a unique index on (device_id, metric, ts) added: the
#               natural key as PostgreSQL would enforce it (a unique index on a partitioned
#               table must hold the partition key, ts; a message id could not be one
#               without ts, and a resend timed by its receipt has another ts)
#   on-conflict COPY into a temporary table, then INSERT ... ON CONFLICT DO NOTHING into
#               readings with that unique index: what the bridge would have to do, since a
#               COPY that meets a duplicate fails whole
#
#   scripts/bench-dedup-pg.sh                # 1,000,000 rows, 3 rounds
#   N=200000 ROUNDS=1 scripts/bench-dedup-pg.sh
#
# Uses its own database firehose_bench_dedup_pg_<pid>, dropped at the end; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
scripts/services.sh ensure
go build -o bin/firehose ./cmd/firehose
# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh
bench_start firehose_bench_dedup_pg
trap bench_cleanup EXIT
bin/firehose migrate --postgres "$PG" >/dev/null

export PGOPTIONS="-c client_min_messages=warning"
q() { psql -h 127.0.0.1 -d "$DB" -X -q -v ON_ERROR_STOP=1 "$@"; }
# The rows: 10,000 devices, 3 metrics, a time a second apart per device, around now (one
# daily partition: the default one).
q -c "\copy (SELECT 'dev-' || (i % 10000), now() - make_interval(secs => i / 30000.0), now(),
        random() * 100, NULL::jsonb, (ARRAY['temp','pressure','rpm'])[1 + i % 3]
      FROM generate_series(1, $N) AS i) TO '$work/rows.csv' CSV"

cols="device_id, ts, received_at, reading, payload, metric"
# timed SQL...: the milliseconds psql reports for the last statement.
timed() {
  q -c '\timing on' "$@" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
}
run() {
  local kind=$1
  q -c "TRUNCATE readings" -c "DROP INDEX IF EXISTS readings_natural_key"
  [ "$kind" = copy ] || q -c "CREATE UNIQUE INDEX readings_natural_key ON readings (device_id, metric, ts)"
  q -c "VACUUM ANALYZE readings" -c "CHECKPOINT"
  case $kind in
    copy|copy+uniq) timed -c "\copy readings ($cols) FROM '$work/rows.csv' CSV" ;;
    on-conflict)
      q -c '\timing on' \
        -c "CREATE TEMP TABLE stage (device_id text COLLATE \"C\", ts timestamptz, received_at timestamptz, reading double precision, payload jsonb, metric text COLLATE \"C\")" \
        -c "\copy stage ($cols) FROM '$work/rows.csv' CSV" \
        -c "INSERT INTO readings ($cols) SELECT $cols FROM stage ON CONFLICT DO NOTHING" |
        sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | awk '{s += $1} END {print s}' ;;
  esac
}

declare -A ms
for round in $(seq 1 "$ROUNDS"); do
  for kind in copy copy+uniq on-conflict; do
    t=$(run "$kind")
    ms[$kind]+="$t "
    echo "round $round: $kind $t ms" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${ms[copy]}" | median)
echo
echo "| path | ms for $N rows (median of $ROUNDS) | rows/s | against copy |"
echo "|---|---|---|---|"
for kind in copy copy+uniq on-conflict; do
  m=$(echo "${ms[$kind]}" | median)
  awk -v k="$kind" -v m="$m" -v n="$N" -v b="$base" 'BEGIN {printf "| %s | %.0f | %.0f | %.2f× |\n", k, m, n / (m / 1000), b / m}'
done
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(psql -h 127.0.0.1 -d postgres -Atc 'SHOW server_version')"
