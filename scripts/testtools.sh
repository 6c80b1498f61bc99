#!/usr/bin/env bash
# testtools.sh — the optional tools some tests use, from Debian's packages, best effort:
#   chromium           renders the fleet simulator's HTML report (simulator TestReportRendersInChromium)
#   mosquitto-clients  mosquitto_pub, a third-party MQTT client for the broker's interop test
#   mosquitto          the third-party broker the subscriber role's tests subscribe to (started by each
#                      test on a free loopback port; the package's own service on 1883 is left alone)
#
#   scripts/testtools.sh ensure   install what is absent when running as root on Debian;
#                                 otherwise say so. Always exits 0: without a tool, its
#                                 test skips and says why.
set -uo pipefail

say() { printf 'testtools: %s\n' "$*" >&2; }

case "${1:-}" in
  ensure) ;;
  *) echo "usage: $0 ensure" >&2; exit 2 ;;
esac

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  say "not installed: ${missing[*]} (not root on Debian): the tests that need them will skip (apt-get install -y ${missing[*]})"
  exit 0
fi
say "installing ${missing[*]} from Debian's packages, for the tests that use them"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; then
  apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || say "apt-get install ${missing[*]} failed: the tests that need them will skip"
fi
exit 0
