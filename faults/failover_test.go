package faults

// The skeleton the failover scenarios share (cluster_failover_test.go,
// sentinel_failover_test.go): for --redis-min-replicas 1 and 0, firehose on
// a Redis topology of the test's own under a mixed load; the scenario kills
// the primary and waits for recovery; then the same process must have served
// throughout, and what landed is checked. Helpers start with fo.

import (
	"strconv"
	"testing"
	"time"

	"firehose/simulator"
)

// foEachMinReplicas runs failover in parallel subtests, with
// --redis-min-replicas 1 (nothing acknowledged may be lost) and 0 (what the
// promoted replica had not received may be).
func foEachMinReplicas(t *testing.T, failover func(t *testing.T, minReplicas int)) {
	skipShort(t)
	for _, n := range []int{1, 0} {
		t.Run("min-replicas-"+strconv.Itoa(n), func(t *testing.T) {
			t.Parallel()
			failover(t, n)
		})
	}
}

// foStartStack starts firehose with a database and key prefix of its own on
// the Redis topology redisURL names, with --redis-min-replicas minReplicas
// and flags; it returns the stack and its process id, which must not change
// during the failover (foCheck).
func foStartStack(t *testing.T, redisURL string, minReplicas int, flags ...string) (*Stack, int) {
	t.Helper()
	s := StartStack(t, OwnServices(t, redisURL), append(flags, "--redis-min-replicas", strconv.Itoa(minReplicas))...)
	return s, s.Proc.Pid()
}

// foStartLoad starts the failover scenarios' load (200 devices, half HTTP,
// half MQTT QoS 1) on s and waits until both edges acknowledge readings.
func foStartLoad(t *testing.T, s *Stack, d time.Duration) *Load {
	t.Helper()
	l := StartLoad(t, s, LoadOpts{Duration: d})
	outWaitFlowing(t, s, l, "the failover")
	return l
}

// foCheck fails t unless the process pid served throughout the failover,
// then waits for the load and checks what a failover may do with
// --redis-min-replicas minReplicas: with 1 or more nothing acknowledged is
// lost or written twice; with 0 acknowledged readings may be lost (the
// caller reports how many) but none is written twice.
func foCheck(t *testing.T, s *Stack, pid int, l *Load, minReplicas int) *simulator.Report {
	t.Helper()
	if s.Proc.Pid() != pid || s.Proc.Exited() {
		t.Fatalf("firehose restarted or exited during the failover: %s", s.Proc.Output())
	}
	rep := l.Wait(5 * time.Minute)
	if minReplicas > 0 {
		AssertExactlyOnce(t, rep, l)
	} else if rep.Landing.DupOnceAcked != 0 || rep.Send.Acked == 0 {
		t.Errorf("with --redis-min-replicas 0: %d duplicates of once-acked readings (want 0), %d acked", rep.Landing.DupOnceAcked, rep.Send.Acked)
	}
	return rep
}
