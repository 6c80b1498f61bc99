#!/usr/bin/env bash
# telegraf.sh — a Telegraf binary with only the plugins the subscriber comparison needs
# (inputs.mqtt_consumer, outputs.postgresql, and the JSON parser that reads our payloads),
# built from Telegraf's source at a pinned release and cached; prints the binary's path on
# stdout, progress on stderr. scripts/bench-subscriber.sh calls it.
#
#   scripts/telegraf.sh                          # ~/.cache/firehose-bench/telegraf-v1.39.3/telegraf
#   TELEGRAF_VERSION=v1.39.2 scripts/telegraf.sh # another release
#
# What it does: `go mod download` of github.com/influxdata/telegraf@VERSION through the
# Go module proxy (the module's zip is the tag's tree, go.sum included), a copy of it in a
# temp dir, and Telegraf's own custom build there:
#   CGO_ENABLED=0 go build -tags "custom,inputs.mqtt_consumer,outputs.postgresql,parsers.json" \
#     -ldflags "-X github.com/influxdata/telegraf/internal.Version=VERSION" ./cmd/telegraf
# The first build downloads Telegraf's dependencies of those plugins into the module cache
# and compiles them: ~5 minutes on 2 idle cores, longer on a busy box; afterwards the cached
# binary is used at once.
#
# Why v1.39.3: the newest release the Go module proxy served here (2026-12-05) is v1.40.1,
# and its go.mod needs go >= 1.27.0, newer than this machine's Go (1.26); v1.40.0, v1.39.4
# and v1.39.5 were not served. v1.39.3 (2026-08-10, go 1.26.0) is the newest that builds.
set -euo pipefail

VERSION=${TELEGRAF_VERSION:-v1.39.3}
TAGS="custom,inputs.mqtt_consumer,outputs.postgresql,parsers.json"
CACHE=${FIREHOSE_BENCH_CACHE:-$HOME/.cache/firehose-bench}/telegraf-$VERSION
BIN=$CACHE/telegraf

if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE"
start=$(date +%s)
echo "telegraf.sh: building Telegraf $VERSION ($TAGS) into $BIN; the first build takes minutes" >&2
dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/influxdata/telegraf@$VERSION" |
  awk -F'"' '$2 == "Error" { print "ERROR " $4; exit } $2 == "Dir" { print $4 }')
case $dir in
  "" | ERROR*)
    echo "telegraf.sh: the module proxy did not give github.com/influxdata/telegraf@$VERSION: ${dir#ERROR }" >&2
    exit 1
    ;;
esac
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
# The module cache is read-only; the build writes nothing into the tree, but a copy keeps
# the cache untouched whatever go does.
cp -r "$dir/." "$src/"
chmod -R u+w "$src"
(cd "$src" && CGO_ENABLED=0 go build -tags "$TAGS" \
  -ldflags "-X github.com/influxdata/telegraf/internal.Version=${VERSION#v}" \
  -o "$BIN.tmp" ./cmd/telegraf)
mv "$BIN.tmp" "$BIN"
echo "telegraf.sh: $("$BIN" --version) built in $(($(date +%s) - start)) s" >&2
echo "$BIN"
