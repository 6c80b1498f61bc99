#!/usr/bin/env bash
# browser.sh — make sure Debian's Chromium is there for the test that renders the fleet
# simulator's HTML report in a headless browser (simulator TestReportRendersInChromium).
#
#   scripts/browser.sh ensure   install the chromium package when /usr/bin/chromium is
#                               absent and this runs as root on Debian; otherwise say why not
#
# Best effort: it always exits 0. Without Chromium the test skips and says why.
set -uo pipefail

say() { printf 'browser: %s\n' "$*" >&2; }

case "${1:-}" in
  ensure) ;;
  *) echo "usage: $0 ensure" >&2; exit 2 ;;
esac

[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  say "Chromium is not installed and this is not root on Debian: the HTML report's browser test will skip (apt-get install -y chromium)"
  exit 0
fi
say "installing chromium from Debian's packages, for the HTML report's browser test"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q chromium >/dev/null 2>&1; then
  apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1 \
    || say "apt-get install chromium failed: the HTML report's browser test will skip"
fi
exit 0
