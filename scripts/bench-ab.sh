#!/usr/bin/env bash
# bench-ab.sh — the single-value paths and the drain of this tree against an earlier commit,
# in the same run: PAIRS pairs, each running the earlier commit's scripts and this tree's,
# one round each, in alternating order, so that the box's mood falls on both alike. Prints each run's
# table rows and, last, the medians of the pairs and their ratios (after / before).
#
#   scripts/bench-ab.sh be6d30f                     # 3 pairs, 20 s a scenario, 300k drain
#   PAIRS=5 DURATION=30s N=1000000 scripts/bench-ab.sh HEAD~1
#
# What runs, per side and pair: scripts/bench-http.sh (wrk on /readings/fast, firehose and the
# bare handler), scripts/bench.sh with SCENARIOS="mqtt-qos1-200 v1-batch" (MQTT QoS 1, 200
# connections; HTTP /v1/readings, 100 readings a request), and scripts/bench-drain.sh (the
# bridge draining N readings, and raw CopyFrom in the same round). Each script starts and
# removes its own redis-server and database; load goes to 127.0.0.1 only. The earlier commit
# is checked out in a temporary worktree, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: scripts/bench-ab.sh COMMIT}
for tool in wrk jq redis-server; do
  command -v "$tool" >/dev/null || { echo "bench-ab: $tool is not installed (apt-get install -y wrk jq redis-server)" >&2; exit 1; }
done
PAIRS=${PAIRS:-3}
DURATION=${DURATION:-20s}
N=${N:-300000}
out=${OUT:-$(mktemp -d /tmp/bench-ab.XXXXXX)}
mkdir -p "$out"
wt=$(mktemp -d /tmp/bench-ab-base.XXXXXX)
rmdir "$wt"
git worktree add -q --detach "$wt" "$base"
trap 'git worktree remove --force "$wt" >/dev/null 2>&1 || true' EXIT
after=$(pwd)
echo "bench-ab: before $(git -C "$wt" rev-parse --short HEAD), after $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (uncommitted changes)'); $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC'); logs in $out"

run_side() { # side pair dir
  local side=$1 i=$2 dir=$3
  (cd "$dir" && ROUNDS=1 DURATION=$DURATION scripts/bench-http.sh) >"$out/$side-$i-http.log" 2>&1
  (cd "$dir" && SCENARIOS="mqtt-qos1-200 v1-batch" ROUNDS=1 DURATION=$DURATION scripts/bench.sh) >"$out/$side-$i-sim.log" 2>&1
  (cd "$dir" && N=$N ROUNDS=1 scripts/bench-drain.sh) >"$out/$side-$i-drain.log" 2>&1
}

for i in $(seq 1 "$PAIRS"); do
  # Odd pairs run before then after, even pairs the other way round: a box
  # that drifts over the run then weighs on both sides alike.
  order="before after"
  [ $((i % 2)) = 0 ] && order="after before"
  for side in $order; do
    dir=$after
    [ "$side" = before ] && dir=$wt
    echo "pair $i, $side: $(date -u +%H:%M:%S)"
    run_side "$side" "$i" "$dir" || { echo "pair $i $side failed: see $out/$side-$i-*.log" >&2; exit 1; }
  done
done

# num FILE PATTERN FIELD [NTH]: the NTH (1) table row matching the pattern, its field as a number.
num() { awk -F'|' -v pat="$2" -v f="$3" -v nth="${4:-1}" '$0 ~ pat && ++seen == nth { gsub(/[*, ]|ms/, "", $f); print $f; exit }' "$1"; }
median() { sort -g | awk '{a[NR]=$1} END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
figure() { # name file-kind pattern field [nth]
  local name=$1 kind=$2 pat=$3 f=$4 nth=${5:-1} side b a
  for side in before after; do
    for i in $(seq 1 "$PAIRS"); do num "$out/$side-$i-$kind.log" "$pat" "$f" "$nth"; done | median >"$out/$side.median"
  done
  b=$(cat "$out/before.median"); a=$(cat "$out/after.median")
  printf '| %s | %s | %s | %s |\n' "$name" "$b" "$a" "$(awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }')"
}
echo
echo "| median of $PAIRS pairs | before | after | after / before |"
echo "|---|---|---|---|"
figure "HTTP /readings/fast (wrk -c64), firehose req/s" http '[|] firehose [|]' 4
figure "same: system CPU µs per request" http '[|] firehose [|]' 14
figure "same: the bare handler's req/s (the box)" http '[|] bare net' 4
figure "MQTT QoS 1, 200 connections, readings/s" sim '[|] mqtt-qos1-200 [|]' 5
figure "same: system CPU µs per reading" sim '[|] mqtt-qos1-200 [|]' 10 2
figure "HTTP /v1/readings, 100 a request, readings/s" sim '[|] v1-batch [|]' 5
figure "same: system CPU µs per reading" sim '[|] v1-batch [|]' 10 2
figure "bridge drain of $N readings, rows/s" drain '[|] bridge drain' 6
figure "raw pgx CopyFrom in the same rounds, rows/s (the box)" drain '[|] raw pgx' 6
