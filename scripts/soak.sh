#!/usr/bin/env bash
# soak.sh — the soak (make soak; never part of make test): a private stack (its own
# redis-server, database and loopback ports) under 2,000 MQTT devices with persistent
# sessions that leave and come back in waves, some subscribed to devices/#, plus HTTP load
# from firehose simulate; the memory of every process sampled each second. It fails unless
# the firehose process stays under its RSS bound, Redis memory stays bounded, and every
# acknowledged reading landed exactly once; then prints the row for RELIABILITY.md.
#
#   scripts/soak.sh                          # 10 minutes (make soak)
#   SOAK_DURATION=1m scripts/soak.sh         # a short check
#   SOAK_FIREHOSE_FLAGS='--memory-limit 384MiB --mqtt-session-expiry 10m' scripts/soak.sh   # serve flags (default --memory-limit 384MiB)
#   SOAK_FIREHOSE_ENV='GOMEMLIMIT=400MiB' scripts/soak.sh             # environment of serve
#
# Other knobs (devices, rates, waves, bounds): the SOAK_ variables of soakConfig in
# faults/soak_test.go. Results (samples.csv every second, summary.md, the test log) go to
# $SOAK_OUT, by default a new directory under /tmp, which is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "soak: redis-server is not installed (apt-get install -y redis-server)" >&2; exit 1; }
scripts/services.sh ensure # PostgreSQL for the soak's database
dur=${SOAK_DURATION:-10m}
out=${SOAK_OUT:-$(mktemp -d /tmp/firehose-soak-XXXXXX)}
mkdir -p "$out"
echo "soak: $dur; results in $out"
# go test's -timeout is a Go duration: "${dur}25m" reads as dur + 25 minutes (connects,
# landing, drain and the build on top of the run).
status=0
FIREHOSE_SOAK=1 SOAK_DURATION=$dur SOAK_OUT=$out \
  go test -count=1 -timeout "${dur}25m" -run '^TestSoak$' -v ./faults/ >"$out/test.log" 2>&1 || status=$?
grep -E '^(=== RUN|--- (PASS|FAIL|SKIP)|ok|FAIL)|soak_test.go:[0-9]+: [^r]' "$out/test.log" | grep -v 'summary (' || true
echo
if [ -f "$out/summary.md" ]; then cat "$out/summary.md"; else echo "soak: no summary; see $out/test.log" >&2; fi
[ "$status" = 0 ] || echo "soak FAILED (exit $status); full log: $out/test.log" >&2
exit "$status"
