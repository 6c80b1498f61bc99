#!/usr/bin/env bash
# campaign.sh — the seeded fault campaign (faults/campaign_test.go, RELIABILITY.md "The
# campaign"), then its table: seed, settings, operations, answers, faults injected by kind,
# violations.
#
#   scripts/campaign.sh                  # the long form: CAMPAIGN_SEEDS seeds (20), 1,500 ops each
#   SEED=7 scripts/campaign.sh           # replay seed 7 (as a failure file names it)
#   CAMPAIGN_SEEDS=5 CAMPAIGN_OPS=800 scripts/campaign.sh
#   CAMPAIGN_CLASSES=readings,sparkplug scripts/campaign.sh   # only some classes (default: all)
#   CAMPAIGN_CLASSES=spbwill,sparkplug CAMPAIGN_FAULTS=edge-kill,redis-kill scripts/campaign.sh
#
# A failing seed's plan, faults as they ran and violating readings go to
# faults/campaign-failures/seed-N.json (CAMPAIGN_OUT to change); the path is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v jq >/dev/null || { echo "jq is not installed: apt-get install -y jq" >&2; exit 1; }
scripts/services.sh ensure
table=$(mktemp)
log=$(mktemp)
trap 'rm -f "$table" "$log"' EXIT
export FIREHOSE_CAMPAIGN_TABLE=$table
export FIREHOSE_CAMPAIGN_OUT=${CAMPAIGN_OUT:-$PWD/faults/campaign-failures}
if [ -n "${SEED:-}" ]; then
  export FIREHOSE_CAMPAIGN_SEED=$SEED
else
  export FIREHOSE_CAMPAIGN=long CAMPAIGN_SEEDS=${CAMPAIGN_SEEDS:-20}
fi
[ -z "${CAMPAIGN_OPS:-}" ] || export FIREHOSE_CAMPAIGN_OPS=$CAMPAIGN_OPS
[ -z "${CAMPAIGN_CLASSES:-}" ] || export FIREHOSE_CAMPAIGN_CLASSES=$CAMPAIGN_CLASSES
[ -z "${CAMPAIGN_FAULTS:-}" ] || export FIREHOSE_CAMPAIGN_FAULTS=$CAMPAIGN_FAULTS
status=0
go test -count=1 -timeout "${CAMPAIGN_TIMEOUT:-240m}" -v -run '^TestCampaign$' ./faults/ >"$log" 2>&1 || status=$?
grep -E 'campaign_test.go:[0-9]+: seed|^\s+--- (PASS|FAIL)|^(ok|FAIL)' "$log" || true
if [ "$status" != 0 ] && ! grep -q 'violations (' "$log"; then
  echo "campaign FAILED before its check; full output:" >&2
  cat "$log" >&2
fi
echo
echo "| seed | settings | ops | acked | unknown | refused | rows | subscribed acked / rows | typed acked / rows | identity acked / rows | faults injected | violations |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
jq -r '"| \(.seed) | \(.settings) | \(.ops) | \(.acked) | \(.unknown) | \(.refused) | \(.rows) | \(.sub_acked // 0) / \(.sub_rows // 0) | \(.typed_acked // 0) / \(.typed_rows // 0) | \(.ident_acked // 0) / \(.ident_rows // 0) | \(.faults | to_entries | map("\(.key)×\(.value)") | join(" ")) | \(.violations)\(if .summary then " (" + .summary + ")" else "" end) |"' "$table"
jq -s '"total: \(length) seeds, \(map(.ops) | add) ops, \(map(.acked) | add) acked, \(map(.faults | to_entries | map(.value) | add // 0) | add) faults, \(map(.violations) | add) violations"' -r "$table"
echo "classes: ${CAMPAIGN_CLASSES:-default}; machine: $(nproc) cores, $(date -u +%Y-%m-%d)"
exit "$status"
