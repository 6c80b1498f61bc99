#!/usr/bin/env bash
# bench-storm.sh — the reconnect storm of issue 20: DEVICES MQTT devices (firehose simulate,
# one TLS connection each, --connect-parallel DEVICES) connected to firehose serve, serve
# restarted (SIGTERM, then the same command on the same ports), and the whole fleet
# reconnecting at once. For each mode, ROUNDS rounds alternating, it prints the time until
# every device is admitted again (from the start of the new process, and from /readyz),
# admitted/s, the CPU of the new serve process over that window (utime+stime of
# /proc/PID/stat, as bin/proccpu reads it) and of the simulator, then the medians against
# the bcrypt file of the same run. A storm not over after CAP counts as capped (bcrypt at
# its default cost admits ~17 devices a second on 2 cores: 10 minutes for 10,000).
#
#   scripts/bench-storm.sh                                  # 10,000 devices, 1 round
#   ROUNDS=2 CAP=180s scripts/bench-storm.sh
#   MODES=bcrypt-file,client-cert DEVICES=2000 scripts/bench-storm.sh
#
# Modes: bcrypt-file (--mqtt-auth FILE of bcrypt hashes at cost 10, firehose mqttpasswd's;
# the first start reads device-secret hashes of the same password so that the fleet
# assembles quickly), client-cert (an ECDSA P-256 certificate each, --mqtt-tls-client-ca with a CRL,
# no password), secret-file (fh1$ device
# secrets in the FILE) and registry (--mqtt-auth postgres). Every mode runs over TLS (a
# server certificate of an openssl-made CA), on loopback. KEX=hybrid,classic runs each mode
# with the devices offering each key exchange (simulate --tls-key-exchange: hybrid, Go's and
# OpenSSL 3.5's default, adds post-quantum ML-KEM to X25519; classic, X25519 alone, is what
# OpenSSL 3.0 and mbedTLS devices offer); default hybrid. The devices cache their TLS
# sessions (simulate --tls-resume, its default), but without shared ticket keys the restarted
# serve cannot open their tickets: full handshakes. RESUME=on runs serve with
# --mqtt-tls-ticket-keys (one key file for both processes), so the fleet resumes its sessions;
# RESUME=off,on runs each mode both ways (default off). The table counts resumed sessions.
#
# The kernel's accept queue must hold a fleet arriving at once: a listener's backlog is
# net.core.somaxconn (Go asks for it), and a SYN that finds the queue full is dropped and
# retried by the client 1, 3, 7 s later. When somaxconn (or tcp_max_syn_backlog) is below
# DEVICES and the script may write it (root), it raises both to DEVICES for the run and puts
# them back after (RAISE_BACKLOG=0: leave them); the values in force are printed.
#
# It runs faults' TestStormBench (the same code as the fault scenario TestStorm): a
# database and key prefix of its own on the machine's PostgreSQL and Redis (127.0.0.1:5432
# and :6379), removed at the end. Each device is a TCP connection: the simulator and serve
# each hold DEVICES descriptors, and a storm opens DEVICES more from the ephemeral range.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${DEVICES:-10000}
ROUNDS=${ROUNDS:-1}
CAP=${CAP:-120s}
MODES=${MODES:-bcrypt-file,client-cert,secret-file,registry}
KEX=${KEX:-hybrid}
RESUME=${RESUME:-off}
RAISE_BACKLOG=${RAISE_BACKLOG:-1}
scripts/services.sh ensure
# shellcheck source=scripts/benchlib.sh
. scripts/benchlib.sh

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((DEVICES + 1000)) ]; then
  echo "bench-storm: ulimit -n is $(ulimit -n), too few descriptors for $DEVICES connections" >&2
  exit 1
fi
read -r lo hi < /proc/sys/net/ipv4/ip_local_port_range
if [ $((hi - lo)) -lt $((2 * DEVICES)) ]; then
  echo "bench-storm: the ephemeral port range $lo-$hi has fewer than 2 x $DEVICES ports" \
    "(a fleet, then its reconnects while the old sockets close)" >&2
  exit 1
fi

out=$(mktemp -d)
restore=""
trap 'rm -rf "$out"; [ -z "$restore" ] || sysctl -q -w $restore' EXIT
somaxconn=$(cat /proc/sys/net/core/somaxconn)
synbacklog=$(cat /proc/sys/net/ipv4/tcp_max_syn_backlog)
if [ "$RAISE_BACKLOG" = 1 ] && { [ "$somaxconn" -lt "$DEVICES" ] || [ "$synbacklog" -lt "$DEVICES" ]; } &&
  sysctl -q -w net.core.somaxconn="$((somaxconn > DEVICES ? somaxconn : DEVICES))" \
    net.ipv4.tcp_max_syn_backlog="$((synbacklog > DEVICES ? synbacklog : DEVICES))" 2>/dev/null; then
  restore="net.core.somaxconn=$somaxconn net.ipv4.tcp_max_syn_backlog=$synbacklog"
fi
overflows() { awk '/^TcpExt:/ { if (!h) { split($0, n); h = 1 } else { for (i = 2; i <= NF; i++) if (n[i] == "ListenOverflows") print $i } }' /proc/net/netstat; }
overflows0=$(overflows)
echo "bench-storm: $DEVICES devices, modes $MODES, $ROUNDS round(s), cap $CAP; ulimit -n $(ulimit -n)," \
  "ephemeral ports $lo-$hi, tcp_tw_reuse $(cat /proc/sys/net/ipv4/tcp_tw_reuse)," \
  "somaxconn $(cat /proc/sys/net/core/somaxconn), tcp_max_syn_backlog $(cat /proc/sys/net/ipv4/tcp_max_syn_backlog)${restore:+ (raised for the run)}" >&2
FIREHOSE_STORM_BENCH=1 FIREHOSE_STORM_DEVICES=$DEVICES FIREHOSE_STORM_ROUNDS=$ROUNDS FIREHOSE_STORM_CAP=$CAP \
  FIREHOSE_STORM_MODES=$MODES FIREHOSE_STORM_KEX=$KEX FIREHOSE_STORM_RESUME=$RESUME FIREHOSE_STORM_TABLE=$out/table.md \
  go test -count=1 -timeout 0 -run '^TestStormBench$' -v ./faults/ > "$out/log" 2>&1 || {
  grep -E -- '--- (FAIL|SKIP)|storm_test.go' "$out/log" | grep -v 'result:' | tail -40 >&2
  [ -s "$out/table.md" ] || exit 1
}

echo
echo "Command: \`ROUNDS=$ROUNDS CAP=$CAP DEVICES=$DEVICES MODES=$MODES KEX=$KEX RESUME=$RESUME scripts/bench-storm.sh\`"
echo
cat "$out/table.md"
echo
echo "somaxconn $(cat /proc/sys/net/core/somaxconn), tcp_max_syn_backlog $(cat /proc/sys/net/ipv4/tcp_max_syn_backlog);" \
  "listen queue overflows during the run (TcpExtListenOverflows): $(($(overflows) - overflows0))"
bench_stamp
