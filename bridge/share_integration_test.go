package bridge

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"firehose/internal/testenv"
)

// owned reads the bridges' shards_owned gauges so that a shard moving from
// one to another during the reads is not counted twice: all in order, then
// all but the last again, keeping each one's smaller read (a gauge drops
// before the lock goes, and rises after the next holder took it).
func owned(rs []*running) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = int(testutil.ToFloat64(r.b.m.owned))
	}
	for i, r := range rs[:len(rs)-1] {
		out[i] = min(out[i], int(testutil.ToFloat64(r.b.m.owned)))
	}
	return out
}

func TestIntegrationBridgesShareTheShards(t *testing.T) {
	t.Parallel()
	const shards = 12
	e := newEnv(t, shards)
	cfg := Config{BatchAge: 20 * time.Millisecond, LockRetry: 100 * time.Millisecond}

	// Every 10 ms until the test ends: the owned shards never add up to
	// more than the shard count.
	var bridges atomic.Pointer[[]*running]
	bridges.Store(&[]*running{})
	var over atomic.Int64
	sampler, stopSampling := context.WithCancel(context.Background())
	var sampling, wg sync.WaitGroup
	sampling.Go(func() {
		for sleepCtx(sampler, 10*time.Millisecond) {
			rs := *bridges.Load()
			if len(rs) == 0 {
				continue
			}
			sum := 0
			for _, n := range owned(rs) {
				sum += n
			}
			if sum > shards {
				over.Add(1)
			}
		}
	})
	wg.Go(func() {
		for i := 0; sampler.Err() == nil && i < 3000; i++ {
			e.add(reading(fmt.Sprintf("share-%d", i%37), i))
			if i%100 == 0 {
				sleepCtx(sampler, 20*time.Millisecond)
			}
		}
	})
	settle := func(rs []*running, want ...int) {
		t.Helper()
		bridges.Store(&rs)
		testenv.Eventually(t, 10*time.Second, func() bool {
			got := owned(rs)
			for i := range want {
				if got[i] != want[i] {
					return false
				}
			}
			return true
		}, "owned shards %v, want %v", owned(rs), want)
	}

	a := e.start(cfg)
	settle([]*running{a}, 12)
	b := e.start(cfg)
	settle([]*running{a, b}, 6, 6)
	c := e.start(cfg)
	took := time.Now()
	settle([]*running{a, b, c}, 4, 4, 4)
	t.Logf("three bridges own 4 each %s after the third started", time.Since(took).Round(time.Millisecond))
	if n := testutil.ToFloat64(a.b.m.handovers) + testutil.ToFloat64(b.b.m.handovers); n != 6+4 {
		t.Errorf("handovers = %v, want 10 (6 to the second bridge, then 2 each to the third)", n)
	}
	if m, s := testutil.ToFloat64(c.b.m.members), testutil.ToFloat64(c.b.m.share); m != 3 || s != 4 {
		t.Errorf("members %v, share %v; want 3 and 4", m, s)
	}

	b.stop()
	settle([]*running{a, c}, 6, 6)
	if n := e.count("SELECT count(*) FROM bridge_members"); n != 2 {
		t.Errorf("bridge_members holds %d rows after a bridge stopped, want 2", n)
	}
	d := e.start(cfg)
	settle([]*running{a, c, d}, 4, 4, 4)

	wg.Wait()
	stopSampling()
	sampling.Wait()
	e.waitOnce(3000, 20*time.Second)
	if n := over.Load(); n > 0 {
		t.Errorf("in %d samples the bridges owned more than %d shards", n, shards)
	}
}
