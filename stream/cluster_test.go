package stream_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// TestIntegrationProducerOnCluster runs the producer on a Redis Cluster of
// its own (3 primaries, a replica each) with MinReplicas 1: the 12 shards
// spread 4 per primary; every acknowledged reading is on its shard's primary
// once; a primary SIGKILLed refuses only the readings of its own shards
// while the others keep being acknowledged; after its replica took over,
// its shards are acknowledged again (once the old primary rejoined as its
// replica: MinReplicas 1 needs one), and every reading acknowledged before,
// during and after the failover is in its stream exactly once.
func TestIntegrationProducerOnCluster(t *testing.T) {
	t.Parallel()
	cluster := testenv.StartRedisCluster(t, 3, 1)
	rdb := cluster.Client(t)
	ctx := context.Background()
	streams := stream.Streams{Prefix: "cl", Count: 12}
	if err := streams.Check(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	if streams.Layout != stream.LayoutSpread {
		t.Fatalf("a new deployment got layout %d, want %d", streams.Layout, stream.LayoutSpread)
	}
	// Even spread: 4 shards on each primary.
	perNode := map[string][]int{}
	for i, k := range streams.Keys() {
		n := cluster.PrimaryOf(t, k)
		perNode[n.Addr()] = append(perNode[n.Addr()], i)
	}
	if len(perNode) != 3 {
		t.Fatalf("shards on %d primaries, want 3: %v", len(perNode), perNode)
	}
	for addr, shards := range perNode {
		if len(shards) != 4 {
			t.Errorf("primary %s holds shards %v, want 4 of the 12", addr, shards)
		}
	}

	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{MinReplicas: 1, ReplicaTimeout: 500 * time.Millisecond, BacklogInterval: 50 * time.Millisecond})
	// One device per shard, so each shard's fate is seen.
	devices := make([]string, streams.Len())
	for i := 0; slices.Contains(devices, ""); i++ {
		d := "dev-" + strconv.Itoa(i)
		if s := streams.Shard(d); devices[s] == "" {
			devices[s] = d
		}
	}
	var mu sync.Mutex
	acked := map[string]int{} // device/value -> times acknowledged
	send := func(shard int, v int) error {
		r := newReading(devices[shard], float64(v))
		err := p.Add(ctx, []ingest.Reading{r})
		if err == nil {
			mu.Lock()
			acked[fmt.Sprintf("%s/%d", r.DeviceID, v)]++
			mu.Unlock()
		}
		return err
	}
	v := 0
	// A replica that has only just synced may confirm a write late on a
	// busy box: WAIT comes up short and the answer is in doubt, not
	// acknowledged (the check at the end allows what it stored), so each
	// write is tried, with a value of its own, until one is acknowledged.
	for range 5 {
		for shard := range devices {
			eventually(t, time.Minute, func() error {
				err := send(shard, v)
				v++
				if err != nil {
					return fmt.Errorf("Add for shard %d: %w", shard, err)
				}
				return nil
			})
		}
	}

	// Kill the primary of shard 0.
	victim := cluster.PrimaryOf(t, streams.Key(0))
	lost := perNode[victim.Addr()]
	start := time.Now()
	victim.Kill()
	t.Logf("%s: killed the primary %s of shards %v", start.Format(time.StampMilli), victim.Addr(), lost)
	// Its shards are refused; every other shard is acknowledged throughout.
	eventually(t, 10*time.Second, func() error {
		if got := p.UnavailableShards(); !slices.Equal(got, lost) {
			return fmt.Errorf("UnavailableShards() = %v, want %v", got, lost)
		}
		return nil
	})
	if err := p.Ready(); err != nil {
		t.Errorf("Ready with one of three primaries down: %v, want nil", err)
	}
	for shard := range devices {
		err := send(shard, v)
		v++
		switch {
		case slices.Contains(lost, shard) && !errors.Is(err, ingest.ErrUnavailable):
			t.Errorf("Add for shard %d on the dead primary: %v, want ErrUnavailable", shard, err)
		case !slices.Contains(lost, shard) && err != nil:
			t.Errorf("Add for shard %d on a live primary: %v, want nil", shard, err)
		}
	}
	// A call spanning a live and a dead shard is refused whole, and nothing
	// of it is written.
	both := []ingest.Reading{newReading(devices[lost[0]], -1), newReading(devices[firstNotIn(len(devices), lost)], -1)}
	if err := p.Add(ctx, both); !errors.Is(err, ingest.ErrUnavailable) {
		t.Errorf("Add across a dead and a live shard: %v, want ErrUnavailable", err)
	}

	// The replica takes over; the producer follows. With MinReplicas 1 the
	// promoted replica's writes are confirmed only once it has a replica of
	// its own: the old primary, restarted, rejoins as one.
	eventually(t, 30*time.Second, func() error {
		if n := cluster.PrimaryOf(t, streams.Key(0)); n == victim {
			return errors.New("the killed primary's replica has not taken over")
		}
		return nil
	})
	t.Logf("replica promoted %s after its primary was killed", time.Since(start).Round(time.Millisecond))
	victim.Restart(t)
	eventually(t, 30*time.Second, func() error {
		if err := send(lost[0], v); err != nil {
			v++
			return err
		}
		v++
		return nil
	})
	t.Logf("shard %d acknowledged again %s after its primary was killed", lost[0], time.Since(start).Round(time.Millisecond))
	if n := cluster.PrimaryOf(t, streams.Key(0)); n == victim {
		t.Errorf("the restarted node serves shard 0 again: it was to rejoin as a replica")
	}
	eventually(t, 10*time.Second, func() error {
		if got := p.UnavailableShards(); len(got) > 0 {
			return fmt.Errorf("UnavailableShards() = %v after the failover", got)
		}
		return nil
	})
	// Every shard takes readings again. WAIT may still come up short
	// while the restarted node resyncs as the new primary's replica: an
	// answer in doubt, not acknowledged (the check below allows what it
	// stored), so each shard is tried until one is acknowledged.
	for shard := range devices {
		eventually(t, time.Minute, func() error {
			err := send(shard, v)
			v++
			if err != nil {
				return fmt.Errorf("Add for shard %d after the failover: %w", shard, err)
			}
			return nil
		})
	}

	// Every acknowledged reading is in its stream once.
	stored := map[string]int{}
	for _, k := range streams.Keys() {
		msgs, err := rdb.XRange(ctx, k, "-", "+").Result()
		if err != nil {
			t.Fatalf("XRANGE %s: %v", k, err)
		}
		for _, m := range msgs {
			rs, err := ingest.DecodeEntry(m.Values)
			if err != nil {
				t.Fatalf("decode %s %s: %v", k, m.ID, err)
			}
			for _, r := range rs {
				stored[fmt.Sprintf("%s/%d", r.DeviceID, int(r.Value))]++
			}
		}
	}
	for key, n := range acked {
		if stored[key] != 1 {
			t.Errorf("reading %s acknowledged %d time(s), stored %d time(s)", key, n, stored[key])
		}
	}
	if stored[devices[lost[0]]+"/-1"] != 0 {
		t.Errorf("a refused call spanning a dead shard was stored")
	}
	t.Logf("%d readings acknowledged, each stored once", len(acked))
}

func firstNotIn(n int, xs []int) int {
	for i := range n {
		if !slices.Contains(xs, i) {
			return i
		}
	}
	return -1
}

// TestIntegrationStreamsLayout: a new deployment gets LayoutSpread; one whose
// metadata a build before it wrote (a shard count, no layout), or that has
// only legacy streams, keeps LayoutLegacy; Load reads it without writing.
func TestIntegrationStreamsLayout(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := t.Context()
	tests := []struct {
		name  string
		setup func(s stream.Streams)
		want  int
	}{
		{name: "new", setup: func(stream.Streams) {}, want: stream.LayoutSpread},
		{name: "metadata of an older build", setup: func(s stream.Streams) {
			rdb.HSet(ctx, s.MetaKey(), "shards", "4")
		}, want: stream.LayoutLegacy},
		{name: "legacy streams only", setup: func(s stream.Streams) {
			rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.Prefix + ":readings:{2}", Values: []string{"v", "1"}})
		}, want: stream.LayoutLegacy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := stream.Streams{Prefix: prefix + "-" + tt.name, Count: 4}
			tt.setup(s)
			loaded := s
			if err := loaded.Load(ctx, rdb); err != nil || loaded.Layout != tt.want {
				t.Fatalf("Load: layout %d, %v; want %d", loaded.Layout, err, tt.want)
			}
			if n, _ := rdb.HExists(ctx, s.MetaKey(), "layout").Result(); n {
				t.Errorf("Load wrote the layout")
			}
			if err := s.Check(ctx, rdb); err != nil || s.Layout != tt.want {
				t.Fatalf("Check: layout %d, %v; want %d", s.Layout, err, tt.want)
			}
			again := stream.Streams{Prefix: s.Prefix, Count: 4}
			if err := again.Check(ctx, rdb); err != nil || again.Layout != tt.want {
				t.Errorf("second Check: layout %d, %v; want %d (recorded)", again.Layout, err, tt.want)
			}
			if got, want := again.Key(1), s.Key(1); got != want {
				t.Errorf("Key(1) = %q, then %q", want, got)
			}
		})
	}
}

// TestIntegrationProducerFollowsSlotMigration moves the slot of a shard to
// another primary while calls for that shard keep coming (CLUSTER SETSLOT
// IMPORTING / MIGRATING, MIGRATE of its keys, SETSLOT NODE: what
// `redis-cli --cluster reshard` does): calls that meet the move (ASK, MOVED,
// TRYAGAIN) are refused, never half-stored; the producer follows the slot to
// its new primary; every acknowledged reading is in the stream once.
func TestIntegrationProducerFollowsSlotMigration(t *testing.T) {
	t.Parallel()
	cluster := testenv.StartRedisCluster(t, 3, 0)
	rdb := cluster.Client(t)
	ctx := context.Background()
	streams := stream.Streams{Prefix: "mig", Count: 3}
	if err := streams.Check(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{BacklogInterval: 50 * time.Millisecond})
	device := ""
	for i := 0; device == ""; i++ {
		if d := "m-" + strconv.Itoa(i); streams.Shard(d) == 0 {
			device = d
		}
	}
	key := streams.Key(0)
	from := cluster.PrimaryOf(t, key)
	var to *testenv.RedisServer
	for _, n := range cluster.Nodes {
		if n != from {
			to = n
			break
		}
	}

	var mu sync.Mutex
	acked, refused := map[int]bool{}, 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for v := 0; ; v++ {
			select {
			case <-stop:
				return
			default:
			}
			err := p.Add(ctx, []ingest.Reading{newReading(device, float64(v))})
			mu.Lock()
			if err == nil {
				acked[v] = true
			} else {
				refused++
			}
			mu.Unlock()
			time.Sleep(time.Millisecond) // pacing of the load
		}
	})
	// The load is acknowledged by the old primary before the move.
	eventually(t, time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 20 {
			return fmt.Errorf("%d readings acknowledged before the move, want 20", len(acked))
		}
		return nil
	})
	migrateSlot(t, cluster, key, from, to)
	// Acknowledged again, now by the new primary.
	mu.Lock()
	before := len(acked)
	mu.Unlock()
	eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < before+50 {
			return fmt.Errorf("%d readings acknowledged since the move, want 50", len(acked)-before)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if n := cluster.PrimaryOf(t, key); n != to {
		t.Fatalf("shard 0's slot is on %s after the move, want %s", n.Addr(), to.Addr())
	}

	stored := map[int]int{}
	msgs, err := rdb.XRange(ctx, key, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		rs, err := ingest.DecodeEntry(m.Values)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			stored[int(r.Value)]++
		}
	}
	for v := range acked {
		if stored[v] != 1 {
			t.Errorf("reading %d acknowledged, stored %d time(s)", v, stored[v])
		}
	}
	for v, n := range stored {
		if n > 1 {
			t.Errorf("reading %d stored %d times", v, n)
		}
	}
	t.Logf("slot of %s moved from %s to %s under load: %d readings acknowledged, %d refused, each acknowledged one stored once",
		key, from.Addr(), to.Addr(), len(acked), refused)
}

// migrateSlot moves key's slot, and the keys in it, from one primary to
// another, as redis-cli --cluster reshard does.
func migrateSlot(t *testing.T, cluster *testenv.RedisCluster, key string, from, to *testenv.RedisServer) {
	t.Helper()
	ctx := context.Background()
	client := func(n *testenv.RedisServer) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
		t.Cleanup(func() { c.Close() })
		return c
	}
	src, dst := client(from), client(to)
	slot, err := src.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	srcID, err := src.Do(ctx, "cluster", "myid").Text()
	if err != nil {
		t.Fatal(err)
	}
	dstID, err := dst.Do(ctx, "cluster", "myid").Text()
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("migrate slot %d: %v", slot, err)
		}
	}
	must(dst.Do(ctx, "cluster", "setslot", slot, "importing", srcID).Err())
	must(src.Do(ctx, "cluster", "setslot", slot, "migrating", dstID).Err())
	time.Sleep(100 * time.Millisecond) // a deliberate gap: calls meet the migrating slot
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, int(slot), 100).Result()
		must(err)
		if len(keys) == 0 {
			break
		}
		args := []any{"migrate", "127.0.0.1", to.Port, "", 0, 5000, "keys"}
		for _, k := range keys {
			args = append(args, k)
		}
		must(src.Do(ctx, args...).Err())
	}
	for _, n := range cluster.Nodes {
		must(client(n).Do(ctx, "cluster", "setslot", slot, "node", dstID).Err())
	}
}

// TestIntegrationDedupOnCluster: the dedup script's keys (stream, metadata,
// both dedup sets) share a slot on a real cluster, so every primary runs it
// (no CROSSSLOT), and a resend is stored once whichever primary holds it.
func TestIntegrationDedupOnCluster(t *testing.T) {
	t.Parallel()
	cluster := testenv.StartRedisCluster(t, 3, 0)
	rdb := cluster.Client(t)
	streams := stream.Streams{Prefix: "cd", Count: 6}
	if err := streams.Check(t.Context(), rdb); err != nil {
		t.Fatal(err)
	}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{Dedup: stream.DedupID})
	var rs []ingest.Reading
	for i := range 60 {
		r := newReading("cdev-"+strconv.Itoa(i), float64(i))
		r.ID = "m" + strconv.Itoa(i)
		rs = append(rs, r)
	}
	for range 2 {
		if err := p.Add(t.Context(), rs); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	for _, key := range streams.Keys() {
		msgs, err := rdb.XRange(t.Context(), key, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			got, err := ingest.DecodeEntry(m.Values)
			if err != nil {
				t.Fatal(err)
			}
			n += len(got)
		}
	}
	if n != len(rs) {
		t.Fatalf("%d readings stored for %d sent twice, want %d", n, len(rs), len(rs))
	}
}

// TestIntegrationOnceOnCluster: a QoS 2 message whose readings go to every
// shard of a cluster (3 primaries, a replica each, MinReplicas 1) is stored
// once per shard, with its once records beside the streams (no CROSSSLOT);
// delivered again it is recognised on every primary; after a Release, which
// waits for a replica as the producer does, the packet id's next message is
// stored.
func TestIntegrationOnceOnCluster(t *testing.T) {
	t.Parallel()
	cluster := testenv.StartRedisCluster(t, 3, 1)
	rdb := cluster.Client(t)
	streams := stream.Streams{Prefix: "co", Count: 6}
	if err := streams.Check(t.Context(), rdb); err != nil {
		t.Fatal(err)
	}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{MinReplicas: 1, ReplicaTimeout: 2 * time.Second})
	s := p.SessionState("sub@co")
	epochs, err := s.Epochs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	devices := devicesOfShards(streams, "co-")
	msg := func(v float64) []ingest.Reading {
		var rs []ingest.Reading
		for _, d := range devices {
			rs = append(rs, newReading(d, v))
		}
		return rs
	}
	const pid = 300
	o := stream.Once{Session: s.Session(), PacketID: pid, Epoch: epochs[pid]}
	for i, want := range []bool{false, true} {
		redelivered, err := p.AddOnce(t.Context(), msg(1), o)
		if err != nil || redelivered != want {
			t.Fatalf("delivery %d: redelivered %v, %v; want %v", i+1, redelivered, err, want)
		}
	}
	e, err := s.Release(t.Context(), pid)
	if err != nil {
		t.Fatal(err)
	}
	o.Epoch = e
	if redelivered, err := p.AddOnce(t.Context(), msg(2), o); err != nil || redelivered {
		t.Fatalf("the next message of the packet id: redelivered %v, %v; want stored", redelivered, err)
	}
	got := countBy(storedReadings(t, rdb, streams))
	for _, d := range devices {
		for _, v := range []string{"1", "2"} {
			if n := got[d+"//"+v]; n != 1 {
				t.Errorf("%s/%s stored %d times, want once", d, v, n)
			}
		}
	}
}
