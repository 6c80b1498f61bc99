#!/usr/bin/env bash
# fuzz.sh DURATION — run every fuzz target in the module for DURATION each
# (go test runs one fuzz target per invocation). Seeds under testdata/fuzz/
# also run as plain tests in `go test`.
set -euo pipefail
time=${1:-10s}
cd "$(dirname "$0")/.."
status=0
while read -r file; do
  pkg=$(dirname "$file")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
    echo "fuzz: $pkg $target ($time)"
    if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$time" "$pkg" >/tmp/fuzz-$$.log 2>&1; then
      cat /tmp/fuzz-$$.log
      status=1
    fi
  done
done < <(grep -l '^func Fuzz' $(find . -name '*_test.go' -not -path './bin/*') | sort)
rm -f /tmp/fuzz-$$.log
exit $status
