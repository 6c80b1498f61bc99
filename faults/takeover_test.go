package faults

// Scenario 2: two bridges sharing the shards, one killed: the other takes
// over every shard, the killed one restarted takes its share back, and no
// shard ever has two writers.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"firehose/internal/testenv"
	"firehose/stream"
)

// tkLockRetry is the bridges' --lock-retry; takeover should happen within
// tkTakeoverBound of a kill (logged when not, not asserted): the dead bridge's PostgreSQL sessions end with
// its connections (at once on loopback), and the survivor's coordinator
// sees its member lock and its shards' locks free on its next tick (every
// tkLockRetry; the documented bound is 2 ticks). The bound is generous for
// a loaded machine; the measured times are logged and recorded.
const (
	tkLockRetry     = 200 * time.Millisecond
	tkTakeoverBound = 10 * tkLockRetry
)

// TestTwoBridgesOneKilled runs two bridge processes against the same
// deployment under load; they share its 4 shards, 2 each. A monitor samples
// both bridges' shards_owned and PostgreSQL's advisory locks every 50 ms for
// the whole run: the owned shards never add up to more than the shard count,
// and no bridge lock has two holders. One bridge is killed with SIGKILL; the
// other must own every shard within tkTakeoverBound; the killed one is
// restarted and takes its share back (the survivor hands 2 shards over after
// committing its batch in hand). The long form repeats the cycle. Every
// acknowledged reading must land exactly once.
func TestTwoBridgesOneKilled(t *testing.T) {
	skipShort(t)
	t.Parallel()
	svc := SharedServices(t)
	edges := StartStack(t, svc, "--roles", "broker,httpgw")
	keys := stream.Streams{Prefix: svc.Prefix, Count: bkShards}.Keys()
	bridgeFlags := []string{"--lock-retry", tkLockRetry.String(), "--batch-age", "100ms"}
	start := func() *Stack { return StartBridge(t, svc, bridgeFlags...) }

	mon := tkStartMonitor(t, svc.Postgres, keys, start(), start())
	// Both running, the shards shared between them.
	testenv.Eventually(t, 30*time.Second, func() bool { s := mon.Last(); return s.Reachable == 2 && s.Owned[0] == 2 && s.Owned[1] == 2 },
		"the two bridges did not share the %d shards: %+v", bkShards, mon.Last())

	cycles := scale(2, 8)
	l := StartLoad(t, edges, LoadOpts{Duration: scale(10*time.Second, 60*time.Second)})
	var takeovers, joins []time.Duration
	for c := range cycles {
		// Let the pair work a while under load.
		bkPause(time.Duration(1000+rand.IntN(1500)) * time.Millisecond)
		s := mon.Last()
		victim := c % 2
		if s.Owned[victim] == 0 {
			t.Fatalf("cycle %d: the bridge to kill owns no shards: %+v", c+1, s)
		}
		survivor := 1 - victim
		owned := s.Owned[victim]
		mon.Bridge(victim).Proc.Kill()
		killed := time.Now()
		var took time.Duration
		testenv.Eventually(t, 30*time.Second, func() bool {
			s := mon.Last()
			if s.At.After(killed) && s.Owned[survivor] == bkShards {
				took = s.At.Sub(killed)
				return true
			}
			return false
		}, "cycle %d: the survivor did not take over all %d shards: %+v", c+1, bkShards, mon.Last())
		takeovers = append(takeovers, took)
		if took > tkTakeoverBound {
			// Reported, not asserted: on a starved machine the ticks come
			// late; what must hold whatever the time (one owner per shard,
			// every reading once) is asserted by the monitor and the load.
			t.Logf("cycle %d: takeover took %s, over the documented bound %s (a loaded machine?)", c+1, took, tkTakeoverBound)
		}
		// The restarted bridge joins and takes its share back.
		mon.Replace(victim, start())
		restarted := time.Now()
		var joined time.Duration
		testenv.Eventually(t, 30*time.Second, func() bool {
			s := mon.Last()
			if s.At.After(restarted) && s.Reachable == 2 && s.Owned[0] == 2 && s.Owned[1] == 2 {
				joined = s.At.Sub(restarted)
				return true
			}
			return false
		}, "cycle %d: the restarted bridge did not take its share back: %+v", c+1, mon.Last())
		joins = append(joins, joined)
		t.Logf("cycle %d: killed a bridge owning %d shards; the other owned all %d after %s; restarted, they owned 2 each %s later (process start included)",
			c+1, owned, bkShards, took.Round(time.Millisecond), joined.Round(time.Millisecond))
	}

	rep := l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	st := mon.Stop()
	st.check(t, bkShards)
	bkAssertDrained(t, bkRedis(t), svc.Postgres, keys, time.Minute)

	r := ResultOf(rep)
	r.Scenario, r.Load = "2. two bridges, one killed", LoadDesc(rep)
	r.Faults = fmt.Sprintf("SIGKILL of one of two bridges sharing the shards ×%d (each in turn; restarted each time, it takes its share back)", cycles)
	r.Notes = fmt.Sprintf("--lock-retry %s; takeover of all %d shards in %s (max %s, bound %s); back to 2 + 2 after the restart in %s (process start included); %d samples every 50 ms of both bridges' shards_owned: sum > %d in %d, bridge locks with >1 holder in pg_locks: %d",
		tkLockRetry, bkShards, tkDurations(takeovers), tkMax(takeovers).Round(time.Millisecond), tkTakeoverBound, tkDurations(joins), st.Samples, bkShards, st.Over, st.MultiHolder)
	Record(t, r)
	for i := range 2 {
		mon.Bridge(i).Stop(20 * time.Second)
	}
	edges.Stop(20 * time.Second)
}

func tkMax(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func tkDurations(ds []time.Duration) string {
	s := ""
	for i, d := range ds {
		if i > 0 {
			s += ", "
		}
		s += d.Round(time.Millisecond).String()
	}
	return s
}

// tkSample is one look at the bridges and PostgreSQL's locks.
type tkSample struct {
	At        time.Time
	Owned     []int // firehose_bridge_shards_owned of each bridge; 0 when it does not answer
	Reachable int   // bridges whose /metrics answered
}

// tkStats sums up the monitor's samples.
type tkStats struct {
	Samples, Errors   int
	Full, Short, Over int // owned shards summed to the shard count, less, more
	MaxSum            int
	MaxHolders        int // pg_locks: most holders of one bridge lock
	MaxLocks          int // pg_locks: most bridge locks held at once
	MultiHolder       int // samples with a bridge lock of more than one holder
	LastErr           error
}

// check logs the totals and fails t where they show two writers of a shard
// (owned shards adding up to more than shards, a lock with two holders), a
// lock key that is not the bridge's, or a run that was not watched.
func (st tkStats) check(t *testing.T, shards int) {
	t.Helper()
	t.Logf("monitor: %d samples; owned shards summed to %d in %d, less (a bridge dead, starting or handing over) in %d, more in %d; max holders of a bridge lock %d, max bridge locks held %d",
		st.Samples, shards, st.Full, st.Short, st.Over, st.MaxHolders, st.MaxLocks)
	if st.Over > 0 {
		t.Errorf("two writers: the bridges' owned shards summed to more than %d in %d samples (max %d)", shards, st.Over, st.MaxSum)
	}
	if st.MaxHolders > 1 {
		t.Errorf("a bridge lock had %d holders in pg_locks", st.MaxHolders)
	}
	if st.MaxLocks != shards {
		t.Errorf("at most %d bridge locks were held at once, want %d (is bkLockKey still bridge.LockKey?)", st.MaxLocks, shards)
	}
	if st.Samples < 20 || st.Errors > st.Samples/2 {
		t.Errorf("monitor: %d samples, %d failed (last: %v): the run was not watched", st.Samples, st.Errors, st.LastErr)
	}
}

// tkMonitor samples the bridges and the locks every 50 ms until Stop.
type tkMonitor struct {
	t        *testing.T
	conn     *pgx.Conn
	shards   int
	lockKeys map[[2]uint32]string // (classid, objid) of each bridge lock
	stop     chan struct{}
	done     chan struct{}

	mu      sync.Mutex
	bridges []*Stack
	last    tkSample
	stats   tkStats
	stopped bool
}

const tkLockQuery = `SELECT classid::bigint, objid::bigint, count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
GROUP BY classid, objid`

// tkStartMonitor watches bridges working the shard streams keys.
func tkStartMonitor(t *testing.T, dbURL string, keys []string, bridges ...*Stack) *tkMonitor {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	m := &tkMonitor{t: t, bridges: bridges, conn: conn, shards: len(keys), lockKeys: map[[2]uint32]string{},
		stop: make(chan struct{}), done: make(chan struct{}), last: tkSample{Owned: make([]int, len(bridges))}}
	for _, k := range keys {
		u := uint64(bkLockKey(k))
		m.lockKeys[[2]uint32{uint32(u >> 32), uint32(u)}] = k
	}
	go m.run()
	t.Cleanup(func() { m.Stop() })
	return m
}

func (m *tkMonitor) run() {
	defer close(m.done)
	defer m.conn.Close(context.Background())
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
		m.sample()
	}
}

// tkOwned reads a bridge's shards_owned; ok is false when it does not answer.
func tkOwned(s *Stack) (int, bool) {
	v, ok := s.Metric("firehose_bridge_shards_owned")
	return int(v), ok
}

func (m *tkMonitor) sample() {
	m.mu.Lock()
	br := append([]*Stack(nil), m.bridges...)
	m.mu.Unlock()
	// Every bridge in order, then all but the last again, keeping each
	// one's smaller read: a bridge's gauge drops before its lock goes and
	// the next holder's rises after it took the lock, so a shard that moved
	// between two bridges during the reads is never counted twice (either
	// the giver's later read or the taker's earlier one misses it).
	s := tkSample{At: time.Now(), Owned: make([]int, len(br))}
	ok := make([]bool, len(br))
	for i, b := range br {
		s.Owned[i], ok[i] = tkOwned(b)
	}
	for i, b := range br[:len(br)-1] {
		n, again := tkOwned(b)
		s.Owned[i], ok[i] = min(s.Owned[i], n), ok[i] && again
	}
	for i := range br {
		if !ok[i] {
			s.Owned[i] = 0
			continue
		}
		s.Reachable++
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := m.conn.Query(ctx, tkLockQuery)
	var holders, locks int
	if err == nil {
		var classid, objid, n int64
		_, err = pgx.ForEachRow(rows, []any{&classid, &objid, &n}, func() error {
			if _, ours := m.lockKeys[[2]uint32{uint32(classid), uint32(objid)}]; ours {
				locks++
				holders = max(holders, int(n))
			}
			return nil
		})
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	st := &m.stats
	st.Samples++
	m.last = s
	sum := 0
	for _, n := range s.Owned {
		sum += n
	}
	switch {
	case sum > m.shards:
		st.Over++
		m.t.Logf("sample at %s: owned shards sum to %d: %+v", s.At.Format(time.StampMilli), sum, s)
	case sum == m.shards:
		st.Full++
	default:
		st.Short++
	}
	st.MaxSum = max(st.MaxSum, sum)
	if err != nil {
		st.Errors++
		st.LastErr = err
		return
	}
	if holders > 1 {
		st.MultiHolder++
	}
	st.MaxHolders = max(st.MaxHolders, holders)
	st.MaxLocks = max(st.MaxLocks, locks)
}

// Last is the latest sample.
func (m *tkMonitor) Last() tkSample {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Bridge is bridge i as the monitor watches it.
func (m *tkMonitor) Bridge(i int) *Stack {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bridges[i]
}

// Replace watches s as bridge i from now on.
func (m *tkMonitor) Replace(i int, s *Stack) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bridges[i] = s
}

// Stop ends the sampling and returns the totals.
func (m *tkMonitor) Stop() tkStats {
	m.mu.Lock()
	if !m.stopped {
		m.stopped = true
		close(m.stop)
	}
	m.mu.Unlock()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}
