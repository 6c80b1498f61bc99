#!/usr/bin/env bash
# faults.sh — the fault suite (faults/): every scenario under simulated load, then a
# markdown table of the results, ready for RELIABILITY.md.
#
#   scripts/faults.sh          # the long form (make faults): 20 bridge kills, 15 s outages, ...
#   scripts/faults.sh short    # the short form, as make test runs it
#   RUN='TestRedis.*' scripts/faults.sh    # some scenarios only
#
# Each scenario starts what it needs itself (firehose processes, its own redis-server or
# PostgreSQL cluster where it kills them) and sends load to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
form=${1:-long}
command -v jq >/dev/null || { echo "jq is not installed: apt-get install -y jq" >&2; exit 1; }
scripts/services.sh ensure
results=$(mktemp)
log=$(mktemp)
trap 'rm -f "$results" "$log"' EXIT
status=0
FIREHOSE_FAULTS=$form FIREHOSE_FAULTS_RESULTS=$results \
  go test -count=1 -timeout 90m -v -run "${RUN:-.}" ./faults/ >"$log" 2>&1 || status=$?
grep -E '^(=== RUN|--- (PASS|FAIL|SKIP)|ok|FAIL)' "$log" || true
if [ "$status" != 0 ]; then
  echo "fault suite FAILED; full output:" >&2
  cat "$log" >&2
fi
echo
echo "| scenario | load held | faults injected / inputs tried | acked | landed | lost | dup. of once-acked | dup. after resend (allowed) | refused | reproduce |"
echo "|---|---|---|---|---|---|---|---|---|---|"
sort "$results" | jq -r '"| \(.scenario) | \(.load) | \(.faults)\(if .notes then "; " + .notes else "" end) | \(.acked) | \(.landed) | \(.lost) | \(.dup_once_acked) | \(.dup_after_resend) | \(.refused) | `\(.command)` |"'
echo
echo "machine: $(nproc) cores, $(date -u +%Y-%m-%d), form: $form"
exit "$status"
