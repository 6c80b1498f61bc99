package sparkplug

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// spbMetric encodes a Metric: name (if not ""), alias, datatype and a
// long_value.
func spbMetric(name string, alias uint64, dt DataType, v uint64) []byte {
	var m []byte
	if name != "" {
		m = protowire.AppendString(protowire.AppendTag(m, 1, protowire.BytesType), name)
	}
	m = protowire.AppendVarint(protowire.AppendTag(m, 2, protowire.VarintType), alias)
	m = protowire.AppendVarint(protowire.AppendTag(m, 4, protowire.VarintType), uint64(dt))
	return protowire.AppendVarint(protowire.AppendTag(m, 11, protowire.VarintType), v)
}

// spbPayload encodes a Payload with seq (if >= 0) and metrics.
func spbPayload(seq int, metrics ...[]byte) []byte {
	p := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1700000000000)
	for _, m := range metrics {
		p = protowire.AppendBytes(protowire.AppendTag(p, 2, protowire.BytesType), m)
	}
	if seq >= 0 {
		p = protowire.AppendVarint(protowire.AppendTag(p, 3, protowire.VarintType), uint64(seq))
	}
	return p
}

func nbirth(bdSeq uint64, names ...string) []byte {
	ms := [][]byte{spbMetric(BdSeqMetric, 0, Int64, bdSeq)}
	for i, n := range names {
		ms = append(ms, spbMetric(n, uint64(i+1), Int64, 0))
	}
	return spbPayload(0, ms...)
}

func ndeath(bdSeq uint64) []byte { return spbPayload(-1, spbMetric(BdSeqMetric, 0, Int64, bdSeq)) }

// ndata sends alias 1 (born by nbirth(_, "temp")) = v.
func ndata(seq int, v uint64) []byte { return spbPayload(seq, spbMetric("", 1, Int64, v)) }

// testStores runs f with a MemoryStore and a RedisStore of its own keys.
func testStores(t *testing.T, f func(t *testing.T, s Store, rs *redisState)) {
	t.Run("memory", func(t *testing.T) { f(t, NewMemoryStore(), nil) })
	t.Run("redis", func(t *testing.T) {
		rdb, prefix := TestRedis(t)
		rs := newRedisState(rdb, prefix+":")
		f(t, rs, rs)
	})
}

// racyStore runs between in the middle of the next message's read and
// write (the next NDEATH's compare and clear, unless any): after the Get
// that reads the state, before the write.
type racyStore struct {
	Store
	mu      sync.Mutex
	any     bool
	between func()
}

func (s *racyStore) Get(ctx context.Context, node string, fields []string) (map[string]string, error) {
	got, err := s.Store.Get(ctx, node, fields)
	s.mu.Lock()
	f := s.between
	if s.any || len(fields) == 3 && fields[1] == fieldBdSeq {
		s.between = nil
	} else {
		f = nil
	}
	s.mu.Unlock()
	if f != nil {
		f()
	}
	return got, err
}

// TestNodeDeathOfEarlierSession: the will of a connection an edge node
// took over (NDEATH with the earlier bdSeq, handled on another goroutine)
// never wipes the new connection's NBIRTH, whichever comes first and even
// when the birth lands between the death's read and its write.
func TestNodeDeathOfEarlierSession(t *testing.T) { testStores(t, nodeDeathOfEarlierSession) }

func nodeDeathOfEarlierSession(t *testing.T, s Store, _ *redisState) {
	const topic = "spBv1.0/g/N%s/e"
	top := func(typ string) string { return strings.Replace(topic, "N%s", "N"+typ, 1) }
	ctx := t.Context()
	rs := &racyStore{Store: s}
	tr := NewTracker(rs)
	handle := func(typ string, payload []byte) *Message {
		t.Helper()
		msg, err := tr.Handle(ctx, top(typ), payload)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		return msg
	}
	dataResolves := func(when string, seq int) {
		t.Helper()
		msg := handle("DATA", ndata(seq, uint64(seq)))
		if msg.Rebirth != nil || len(msg.Values) != 1 {
			t.Fatalf("%s: NDATA: rebirth %v, %d values; want the value, no rebirth", when, msg.Rebirth, len(msg.Values))
		}
	}
	// Will first: it ends session 1, then session 2 is born.
	handle("BIRTH", nbirth(1, "temp"))
	if msg := handle("DEATH", ndeath(1)); msg.Stale {
		t.Fatal("NDEATH of the live session: stale")
	}
	handle("BIRTH", nbirth(2, "temp"))
	dataResolves("will before birth", 1)
	// Will after the new birth: stale, session 3 lives on.
	handle("BIRTH", nbirth(3, "temp"))
	if msg := handle("DEATH", ndeath(2)); !msg.Stale {
		t.Fatal("NDEATH of an earlier session after the new birth: not stale")
	}
	dataResolves("will after birth", 1)
	// The new birth lands while the will is between its read and its
	// write: the read saw session 3, whose bdSeq it carries.
	rs.between = func() {
		if _, err := tr.Handle(ctx, top("BIRTH"), nbirth(4, "temp")); err != nil {
			t.Error(err)
		}
	}
	if msg := handle("DEATH", ndeath(3)); !msg.Stale {
		t.Error("NDEATH overtaken by the next birth: not stale")
	}
	dataResolves("birth between the will's read and write", 1)
	// The same with a node that reuses its bdSeq: the session read is
	// not the live one any more.
	rs.between = func() {
		if _, err := tr.Handle(ctx, top("BIRTH"), nbirth(4, "temp")); err != nil {
			t.Error(err)
		}
	}
	if msg := handle("DEATH", ndeath(4)); !msg.Stale {
		t.Error("NDEATH overtaken by a birth of the same bdSeq: not stale")
	}
	dataResolves("birth of the same bdSeq between the will's read and write", 1)
	// The live session's own death still ends it.
	handle("DEATH", ndeath(4))
	if msg := handle("DATA", ndata(2, 2)); msg.Rebirth == nil || msg.Rebirth.Reason != NotBorn {
		t.Fatalf("NDATA after NDEATH: %+v, want not born", msg.Rebirth)
	}
}

// TestLateMessageOfEndedSession: a DATA, DBIRTH or DDEATH read against a
// session that a new NBIRTH (another connection's) replaced before its
// write changes nothing of the new session: its seq stays, no device is
// born or forgotten in it.
func TestLateMessageOfEndedSession(t *testing.T) {
	testStores(t, func(t *testing.T, s Store, _ *redisState) {
		ctx := t.Context()
		rs := &racyStore{Store: s, any: true}
		tr := NewTracker(rs)
		handle := func(topic string, payload []byte) *Message {
			t.Helper()
			msg, err := tr.Handle(ctx, topic, payload)
			if err != nil {
				t.Fatalf("%s: %v", topic, err)
			}
			return msg
		}
		reborn := func() {
			if _, err := tr.Handle(ctx, "spBv1.0/g/NBIRTH/e", nbirth(2, "temp")); err != nil {
				t.Error(err)
			}
		}
		dev := spbPayload(1, spbMetric("v", 50, Int64, 1))
		for _, late := range []struct {
			topic   string
			payload []byte
		}{
			{"spBv1.0/g/NDATA/e", ndata(1, 1)},
			{"spBv1.0/g/DBIRTH/e/d", dev},
			{"spBv1.0/g/DDEATH/e/d", spbPayload(2)},
		} {
			handle("spBv1.0/g/NBIRTH/e", nbirth(1, "temp"))
			if late.topic == "spBv1.0/g/DDEATH/e/d" {
				handle("spBv1.0/g/DBIRTH/e/d", dev)
			}
			rs.between = reborn
			handle(late.topic, late.payload)
			// Session 2 goes on from its NBIRTH's seq 0, and knows no device.
			if msg := handle("spBv1.0/g/NDATA/e", ndata(1, 7)); msg.Rebirth != nil || len(msg.Values) != 1 {
				t.Errorf("late %s: the new session's NDATA: rebirth %v, %d values", late.topic, msg.Rebirth, len(msg.Values))
			}
			if msg := handle("spBv1.0/g/DDATA/e/d", spbPayload(2, spbMetric("", 50, Int64, 1))); msg.Rebirth == nil || msg.Rebirth.Reason != NotBorn {
				t.Errorf("late %s: a device of the old session is born in the new one: %+v", late.topic, msg.Rebirth)
			}
		}
	})
}

// TestNodeDeathHammer: an edge node reconnects many times; each
// connection's will (NDEATH with the previous bdSeq) runs on another
// goroutine at the same time as the new NBIRTH and NDATA. Every NDATA
// resolves.
func TestNodeDeathHammer(t *testing.T) {
	testStores(t, func(t *testing.T, s Store, _ *redisState) {
		ctx := t.Context()
		tr := NewTracker(s)
		wills := make(chan uint64)
		var wg sync.WaitGroup
		wg.Go(func() {
			for bd := range wills {
				if _, err := tr.Handle(ctx, "spBv1.0/g/NDEATH/e", ndeath(bd)); err != nil {
					t.Error(err)
				}
			}
		})
		lost := 0
		const rounds = 300
		for bd := uint64(1); bd <= rounds; bd++ {
			if bd > 1 {
				wills <- bd - 1 // the will of the connection taken over
			}
			if _, err := tr.Handle(ctx, "spBv1.0/g/NBIRTH/e", nbirth(bd%256, "temp")); err != nil {
				t.Fatal(err)
			}
			for seq := 1; seq <= 3; seq++ {
				msg, err := tr.Handle(ctx, "spBv1.0/g/NDATA/e", ndata(seq, bd))
				if err != nil {
					t.Fatal(err)
				}
				if msg.Rebirth != nil || len(msg.Values) != 1 {
					lost++
				}
			}
		}
		close(wills)
		wg.Wait()
		if lost > 0 {
			t.Errorf("%d of %d NDATA did not resolve: a will wiped a later birth", lost, 3*rounds)
		}
	})
}

// TestStateBounded: an owner's births past MaxNodes nodes and a node's
// state past MaxNodeBytes are refused, deaths give the room back, the
// account follows, and the state of an ended session expires.
func TestStateBounded(t *testing.T) { testStores(t, stateBounded) }

func stateBounded(t *testing.T, s Store, rs *redisState) {
	ctx := t.Context()
	tr := NewTracker(s)
	tr.MaxNodes = 3
	tr.MaxNodeBytes = 4096
	now := time.UnixMilli(1700000000000)
	tr.Now = func() time.Time { return now }
	birth := func(owner, node string, names ...string) (*Message, error) {
		return tr.HandleFrom(ctx, owner, "spBv1.0/"+strings.Replace(node, "/", "/NBIRTH/", 1), nbirth(1, names...))
	}
	sessions := map[string]string{}
	for i := range 3 {
		node := "g" + strconv.Itoa(i) + "/e"
		msg, err := birth("a", node, "temp")
		if err != nil {
			t.Fatalf("birth %d: %v", i, err)
		}
		sessions[node] = msg.Session
	}
	if _, err := birth("a", "g9/e", "temp"); !errors.Is(err, ErrQuota) {
		t.Fatalf("4th node of owner a: %v, want ErrQuota", err)
	}
	if _, err := birth("a", "g0/e", "temp", "pressure"); err != nil {
		t.Fatalf("rebirth of a node a has: %v", err)
	}
	if _, err := birth("b", "g9/e", "temp"); err != nil {
		t.Fatalf("owner b: %v", err)
	}
	if _, err := birth("b", "g8/e", bigNames("x", 10)...); !errors.Is(err, ErrStateTooLarge) {
		t.Fatalf("large birth: %v, want ErrStateTooLarge", err)
	}
	// A DBIRTH that would take the node over the bound.
	var dms [][]byte
	for i, n := range bigNames("y", 10) {
		dms = append(dms, spbMetric(n, uint64(10+i), Int64, 0))
	}
	if _, err := tr.Handle(ctx, "spBv1.0/g9/DBIRTH/e/d", spbPayload(1, dms...)); !errors.Is(err, ErrStateTooLarge) {
		t.Fatalf("large DBIRTH: %v, want ErrStateTooLarge", err)
	}
	st, err := tr.Sweep(ctx)
	if err != nil || st.Nodes != 4 || st.Bytes <= 0 {
		t.Fatalf("account: %+v, %v; want 4 nodes", st, err)
	}
	// Death gives the room back.
	if _, err := tr.Handle(ctx, "spBv1.0/g1/NDEATH/e", ndeath(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := birth("a", "g7/e", "temp"); err != nil {
		t.Fatalf("birth after a death: %v", err)
	}
	// g2/e's connection ends: its state expires (a stale session id
	// changes nothing).
	if err := tr.EndSession(ctx, "g0/e", sessions["g0/e"]); err != nil { // reborn since
		t.Fatal(err)
	}
	if err := tr.EndSession(ctx, "g2/e", sessions["g2/e"]); err != nil {
		t.Fatal(err)
	}
	if rs != nil {
		if ttl := rs.rdb.PTTL(ctx, rs.Key("g2/e")).Val(); ttl <= 0 {
			t.Errorf("ended session's state: TTL %v, want one", ttl)
		}
		if ttl := rs.rdb.PTTL(ctx, rs.Key("g0/e")).Val(); ttl != -1 {
			t.Errorf("live session's state: TTL %v, want none", ttl)
		}
	} else {
		if _, ok := s.(*MemoryStore).ExpiresAt("g0/e"); ok {
			t.Error("live session's state expires")
		}
	}
	now = now.Add(DefaultStateTTL + time.Second)
	st, err = tr.Sweep(ctx)
	if err != nil || st.Nodes != 3 {
		t.Fatalf("after expiry: %+v, %v; want 3 nodes", st, err)
	}
	if msg, err := tr.Handle(ctx, "spBv1.0/g2/NDATA/e", ndata(1, 1)); err != nil || msg.Rebirth == nil || msg.Rebirth.Reason != NotBorn {
		t.Fatalf("NDATA of an expired node: %+v, %v", msg, err)
	}
	// Every death empties the account.
	for _, n := range []string{"g0", "g7", "g9"} {
		if _, err := tr.Handle(ctx, "spBv1.0/"+n+"/NDEATH/e", ndeath(1)); err != nil {
			t.Fatal(err)
		}
	}
	if st, err = tr.Sweep(ctx); err != nil || st != (Stats{}) {
		t.Fatalf("after every death: %+v, %v; want none", st, err)
	}
	if rs != nil {
		keys, err := rs.rdb.Keys(ctx, escapeGlobForTest(rs.prefix)+"*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if ttl := rs.rdb.PTTL(ctx, k).Val(); k != rs.BytesKey() && ttl == -1 {
				t.Errorf("%s left without a TTL", k)
			}
		}
	}
}

// TestIntegrationRedisStoreOnCluster: on a Redis Cluster, a prefix with a
// hash tag keeps every key of the state in one slot, where its scripts
// work.
func TestIntegrationRedisStoreOnCluster(t *testing.T) {
	t.Parallel()
	rdb := TestRedisCluster(t)
	for i, f := range []func(*testing.T, Store, *redisState){nodeDeathOfEarlierSession, stateBounded} {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			rs := newRedisState(rdb, "{spb"+strconv.Itoa(i)+"}:")
			f(t, rs, rs)
		})
	}
}

// bigNames returns n metric names of 500 bytes.
func bigNames(c string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, strconv.Itoa(i)+strings.Repeat(c, 499))
	}
	return out
}

func escapeGlobForTest(s string) string {
	r := strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`, "]", `\]`)
	return r.Replace(s)
}
