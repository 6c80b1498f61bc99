package faults

// Scenario 17: three bridges share 12 shards, 4 each; one dies and the
// survivors own 6 each within the bound; it comes back and they own 4 each
// again. Helpers start with sh.

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"firehose/internal/testenv"
	"firehose/stream"
)

const (
	shShards  = 12
	shBridges = 3
	// shLockRetry is the bridges' --lock-retry: their heartbeat and
	// rebalancing tick. The documented bounds (bridge/members.go, docs/operations.md):
	// a dead bridge's shards are taken within 2 ticks, a joining bridge has
	// its share within 2 ticks + 1 s + a commit. The bounds here add slack
	// for a loaded 2-core machine and, for a join, the start of the process
	// (migration check, admin listener, joining). They are reported, not
	// asserted: a takeover is correct however long a starved machine makes
	// it take (the monitor checks that no shard ever has two owners, and the
	// load that every reading lands once); the long form's table shows the
	// times.
	shLockRetry   = 200 * time.Millisecond
	shDeathBound  = 10 * shLockRetry
	shJoinBound   = 2*shLockRetry + time.Second + 8*time.Second
	shTermTimeout = 20 * time.Second
)

// TestBridgesShareTheShards runs three bridge processes on a deployment of
// 12 shards under load. A monitor samples the bridges' shards_owned and
// PostgreSQL's advisory locks every 50 ms for the whole run. It shows that:
//
//   - started one after the other, the three own 4 shards each within
//     shJoinBound of the last start (the first took all 12; each later one
//     took its share from the others, who handed shards over after
//     committing their batch in hand);
//   - a bridge killed with SIGKILL: the two survivors own 6 each within
//     shDeathBound; restarted, the three own 4 each again within
//     shJoinBound. The long form repeats this for each bridge in turn, and
//     also stops one with SIGTERM (a bridge leaving);
//   - the owned shards never add up to more than 12 and no bridge lock has
//     two holders in pg_locks; bridge_members holds one row per live
//     bridge; every acknowledged reading lands exactly once.
func TestBridgesShareTheShards(t *testing.T) {
	skipShort(t)
	t.Parallel()
	svc := SharedServices(t)
	shards := []string{"--shards", fmt.Sprint(shShards)}
	edges := StartStack(t, svc, append([]string{"--roles", "broker,httpgw"}, shards...)...)
	keys := stream.Streams{Prefix: svc.Prefix, Count: shShards}.Keys()
	flags := append([]string{"--lock-retry", shLockRetry.String(), "--batch-age", "100ms"}, shards...)
	start := func() *Stack { return StartBridge(t, svc, flags...) }

	// Started one after the other (each a process of its own, so the first
	// may own all 12 for a moment, then 6 + 6), then 4 + 4 + 4.
	first := time.Now()
	m := tkStartMonitor(t, svc.Postgres, keys, start(), start(), start())
	testenv.Await(t, func() bool { s := m.Last(); return s.Reachable == shBridges && shEach(s.Owned, shShards/shBridges) },
		"three bridges did not own %d shards each: %+v", shShards/shBridges, shLast(m))
	startup := time.Since(first)
	t.Logf("three bridges own %d shards each %s after they started", shShards/shBridges, startup.Round(time.Millisecond))
	shMembers(t, svc.Postgres, shBridges)

	type cycle struct {
		kill bool // SIGKILL, else SIGTERM
	}
	cycles := []cycle{{kill: true}}
	if Long() {
		cycles = []cycle{{kill: true}, {kill: true}, {kill: false}, {kill: true}}
	}
	l := StartLoad(t, edges, LoadOpts{Duration: scale(14*time.Second, 60*time.Second)})
	rrWaitAccepted(t, edges, l, 2000)
	var deaths, joins []time.Duration
	var notes []string
	for c, cy := range cycles {
		bkPause(scale(1500*time.Millisecond, 4*time.Second))
		victim := c % shBridges
		how := "SIGKILL"
		gone := time.Now()
		if cy.kill {
			m.Bridge(victim).Proc.Kill()
		} else {
			how = "SIGTERM"
			m.Bridge(victim).Proc.Signal(syscall.SIGTERM)
		}
		var took time.Duration
		testenv.Await(t, func() bool {
			s := m.Last()
			if !s.At.After(gone) {
				return false
			}
			for i, o := range s.Owned {
				if i != victim && o != shShards/(shBridges-1) {
					return false
				}
			}
			took = s.At.Sub(gone)
			return true
		}, "cycle %d: after the %s of bridge %d the survivors did not own %d shards each: %+v", c+1, how, victim, shShards/(shBridges-1), shLast(m))
		if !cy.kill {
			if code, ok := m.Bridge(victim).Proc.Wait(shTermTimeout); !ok || code != 0 {
				t.Fatalf("cycle %d: after SIGTERM the bridge exited %v with code %d; output: %s", c+1, ok, code, m.Bridge(victim).Proc.Output())
			}
		}
		deaths = append(deaths, took)
		if took > shDeathBound {
			t.Logf("cycle %d: the survivors took the shards of the bridge gone (%s) after %s, over the documented bound %s (a loaded machine?)", c+1, how, took, shDeathBound)
		}
		shMembers(t, svc.Postgres, shBridges-1)

		m.Replace(victim, start())
		back := time.Now()
		var joined time.Duration
		testenv.Await(t, func() bool {
			s := m.Last()
			if s.At.After(back) && s.Reachable == shBridges && shEach(s.Owned, shShards/shBridges) {
				joined = s.At.Sub(back)
				return true
			}
			return false
		}, "cycle %d: the bridge restarted did not get its share: %+v", c+1, shLast(m))
		joins = append(joins, joined)
		if joined > shJoinBound {
			t.Logf("cycle %d: the bridge restarted had its share after %s, over the documented bound %s (a loaded machine?)", c+1, joined, shJoinBound)
		}
		note := fmt.Sprintf("%s of a bridge: the survivors owned 6 + 6 after %s; restarted, 4 + 4 + 4 after %s", how, took.Round(time.Millisecond), joined.Round(time.Millisecond))
		t.Logf("cycle %d: %s", c+1, note)
		notes = append(notes, note)
		shMembers(t, svc.Postgres, shBridges)
	}

	rep := l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	st := m.Stop()
	st.check(t, shShards)
	bkAssertDrained(t, bkRedis(t), svc.Postgres, keys, time.Minute)
	handovers := 0.0
	for i := range shBridges {
		n, _ := m.Bridge(i).Metric("firehose_bridge_handovers_total")
		handovers += n
	}

	r := ResultOf(rep)
	r.Scenario, r.Load = "19. bridges share the shards", LoadDesc(rep)
	r.Faults = fmt.Sprintf("3 bridges on %d shards; %d× one of them gone (%s) and restarted", shShards, len(cycles), shHow(cycles, func(c cycle) bool { return c.kill }))
	r.Notes = fmt.Sprintf("--lock-retry %s; started one after the other, 4 + 4 + 4 after %s; %s; max takeover %s (bound %s), max join %s (bound %s, process start included); %.0f shards handed over (counted by the processes running at the end); %d samples every 50 ms of the bridges' shards_owned: sum > %d in %d, bridge locks with >1 holder in pg_locks: %d",
		shLockRetry, startup.Round(time.Millisecond), strings.Join(notes, "; "), tkMax(deaths).Round(time.Millisecond), shDeathBound,
		tkMax(joins).Round(time.Millisecond), shJoinBound, handovers, st.Samples, shShards, st.Over, st.MultiHolder)
	Record(t, r)
	for i := range shBridges {
		m.Bridge(i).Stop(shTermTimeout)
	}
	shMembers(t, svc.Postgres, 0)
	edges.Stop(20 * time.Second)
}

// shEach reports whether every bridge owns n shards.
func shEach(owned []int, n int) bool {
	return !slices.ContainsFunc(owned, func(o int) bool { return o != n })
}

// shMembers waits until bridge_members holds n rows (a dead bridge's row goes
// at the survivors' next tick once its heartbeat is stale; a stopped one
// deletes its own), as long as the test may run: on a starved machine the
// ticks come late, and only the outcome is asserted. With no bridge left
// (n == 0) nobody expires a row, and a stopped bridge's delete is best
// effort (bridge/members.go leave: 2 s): a row whose member lock no session
// holds is a dead member's by the bridges' own rule (expireQuery), so only
// rows of live members count then.
func shMembers(t *testing.T, dbURL string, n int) {
	t.Helper()
	query := "SELECT count(*) FROM bridge_members"
	if n == 0 {
		query = `SELECT count(*) FROM bridge_members m WHERE EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory'
			AND l.granted AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND l.classid::bigint = (m.lock_key >> 32) & 4294967295 AND l.objid::bigint = m.lock_key & 4294967295)`
	}
	var got int64
	took := testenv.Await(t, func() bool { got = QueryInt(t, dbURL, query); return got == int64(n) },
		"bridge_members holds %s rows, want %d", edgeLazy(func() string { return fmt.Sprint(got) }), n)
	if took > 10*time.Second {
		t.Logf("bridge_members held %d rows after %s", n, took.Round(time.Millisecond))
	}
	if n == 0 {
		if left := QueryInt(t, dbURL, "SELECT count(*) FROM bridge_members"); left > 0 {
			t.Logf("%d rows of stopped bridges left in bridge_members (their delete failed; dead by their lock)", left)
		}
	}
}

func shHow[C any](cs []C, kill func(C) bool) string {
	k := 0
	for _, c := range cs {
		if kill(c) {
			k++
		}
	}
	if k == len(cs) {
		return "SIGKILL"
	}
	return fmt.Sprintf("%d SIGKILL, %d SIGTERM", k, len(cs)-k)
}

// shLast formats the monitor's last sample when a failure message is
// printed, not when the wait began.
func shLast(m *tkMonitor) fmt.Stringer {
	return edgeLazy(func() string { return fmt.Sprintf("%+v", m.Last()) })
}
