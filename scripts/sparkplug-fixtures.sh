#!/usr/bin/env bash
# sparkplug-fixtures.sh — regenerate the Sparkplug B test fixtures of package
# sparkplug with Eclipse Tahu's own encoder (npm sparkplug-payload, pinned in
# sparkplug/testdata/package.json and package-lock.json), and check that
# Tahu's decoder reads our Rebirth request.
#
#   scripts/sparkplug-fixtures.sh
#
# Writes sparkplug/testdata/fixtures/*.bin, expected.json and rebirth.bin
# (commit them: go test needs no npm). node_modules stays in
# sparkplug/testdata/node_modules (gitignored). Installs nodejs and npm from
# Debian's packages when they are missing and running as root.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=sparkplug/testdata

say() { printf 'sparkplug-fixtures: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "node and npm are not installed. Install them: sudo apt-get install -y nodejs npm — then run this again"
  say "installing nodejs and npm from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q nodejs npm >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q nodejs npm >/dev/null; } \
    || die "apt-get install nodejs npm failed"
fi

say "npm ci in $dir (sparkplug-payload as pinned)"
(cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)

say "writing $dir/rebirth.bin from RebirthRequest"
SPARKPLUG_WRITE_REBIRTH=1 go test -count=1 -run '^TestRebirthRequestFixture$' ./sparkplug/ >/dev/null

(cd "$dir" && node gen.js)

say "checking the Go decoder against them"
go test -count=1 -run '^(TestFixtures|TestRebirthRequestFixture)$' ./sparkplug/
