package faults

// Scenario: one of two bridges sharing the shards has its network path to
// PostgreSQL freeze (a proxy that stops forwarding but keeps both sockets
// open); the other takes over its shards within the documented bound.
// Helpers start with bp.

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"firehose/internal/testenv"
	"firehose/stream"
)

// TestBridgePartitioned runs two bridge processes under load, each reaching
// PostgreSQL through a TCP proxy of its own; they share the 4 shards, 2
// each. Mid-load one bridge's proxy freezes: it stops forwarding both ways but keeps every socket open, so
// neither side's kernel sees anything wrong and TCP keepalives are answered
// (by the proxy's kernel). The first freeze lands in the middle of a COPY
// (right after the proxy forwarded a CopyData message), where the frozen
// bridge's backend waits for rows no server timeout interrupts; the long
// form adds a freeze at a random moment, of the other bridge. It shows that:
//
//   - the other bridge owns every shard within --bridge-session-timeout +
//     2 × --lock-retry (plus slack for a loaded machine) of the freeze:
//     PostgreSQL ended the frozen bridge's idle sessions, its membership
//     session among them (idle_session_timeout,
//     idle_in_transaction_session_timeout), so the other one's share became
//     every shard, and it ended the session stuck in the COPY, silent for
//     the timeout;
//   - the frozen bridge notices by itself: its shards_owned falls to 0
//     within the timeout (every PostgreSQL call has a deadline), it commits
//     nothing once frozen, and after the thaw it joins again and takes its
//     share back (2 and 2);
//   - a bridge lock never has two holders (pg_locks, every 50 ms), and every
//     acknowledged reading lands exactly once (by device and sequence
//     number in PostgreSQL).
//
// The short form uses a 6 s session timeout; the long form the default, 30 s.
func TestBridgePartitioned(t *testing.T) {
	skipShort(t)
	t.Parallel()
	timeout := scale(6*time.Second, 30*time.Second)
	const lockRetry = 200 * time.Millisecond
	bound := timeout + 2*lockRetry
	slack := 3 * time.Second
	onCopy := []bool{true}
	if Long() {
		onCopy = []bool{true, false}
	}

	svc := SharedServices(t)
	edges := StartStack(t, svc, "--roles", "broker,httpgw")
	keys := stream.Streams{Prefix: svc.Prefix, Count: bkShards}.Keys()
	flags := []string{"--lock-retry", lockRetry.String(), "--batch-age", "100ms", "--bridge-session-timeout", timeout.String()}
	var proxies [2]*bpProxy
	var bridges [2]*Stack
	for i := range 2 {
		proxies[i] = bpStartProxy(t, svc.Postgres)
		via := svc
		via.Postgres = proxies[i].URL()
		bridges[i] = StartBridge(t, via, flags...)
	}
	mon := tkStartMonitor(t, svc.Postgres, keys, bridges[0], bridges[1])
	shared := func() bool { s := mon.Last(); return s.Reachable == 2 && s.Owned[0] == 2 && s.Owned[1] == 2 }
	testenv.Await(t, shared, "the two bridges did not share the %d shards: %s", bkShards, shLast(mon))

	l := StartLoad(t, edges, LoadOpts{Duration: time.Duration(len(onCopy))*(timeout+12*time.Second) + 8*time.Second})
	rrWaitAccepted(t, edges, l, 4000)
	var notes []string
	var evicted float64
	var maxTook time.Duration
	for c, copying := range onCopy {
		bkPause(time.Second)
		if !shared() {
			t.Fatalf("cycle %d: the bridges do not own 2 shards each: %+v", c+1, mon.Last())
		}
		owner := c % 2 // the bridge to freeze
		other := 1 - owner
		evictedBefore, _ := outMetricSum(bridges[other], "firehose_bridge_sessions_evicted_total")
		where := "at a random moment"
		if copying {
			where = "in the middle of a COPY"
			select {
			case <-proxies[owner].FreezeOnCopy():
			case <-time.After(20 * time.Second):
				t.Fatalf("cycle %d: the owner sent no COPY rows within 20 s", c+1)
			}
		} else {
			proxies[owner].Freeze()
		}
		frozen := time.Now()
		bkPause(500 * time.Millisecond) // a commit answered just before the freeze is counted by now
		committedFrozen, _ := bridges[owner].Metric("firehose_bridge_rows_committed_total")

		var gaveUp, took time.Duration
		testenv.Await(t, func() bool {
			s := mon.Last()
			if !s.At.After(frozen) {
				return false
			}
			if gaveUp == 0 && s.Owned[owner] == 0 {
				gaveUp = s.At.Sub(frozen)
			}
			if took == 0 && s.Owned[other] == bkShards {
				took = s.At.Sub(frozen)
			}
			return gaveUp > 0 && took > 0
		}, "cycle %d: the other bridge did not own every shard, or the frozen bridge did not give its shards up (the monitor logs its samples)", c+1)
		committedAfter, _ := bridges[owner].Metric("firehose_bridge_rows_committed_total")
		ev, _ := outMetricSum(bridges[other], "firehose_bridge_sessions_evicted_total")
		evicted += ev - evictedBefore
		maxTook = max(maxTook, took)
		note := fmt.Sprintf("freeze %d (%s): the other bridge owned all %d shards after %s, the frozen bridge gave its 2 up after %s, %.0f silent sessions ended by the other",
			c+1, where, bkShards, took.Round(time.Millisecond), gaveUp.Round(time.Millisecond), ev-evictedBefore)
		t.Log(note)
		notes = append(notes, note)
		// Times are reported, not asserted: on a starved machine the
		// processes' timers and the monitor's samples come late, and what
		// must hold whatever the times is asserted here and below (nothing
		// committed by the frozen bridge after the freeze, every reading
		// once).
		if took > bound+slack {
			t.Logf("cycle %d: takeover took %s, over the documented bound %s (+%s slack): a loaded machine?", c+1, took, bound, slack)
		}
		if gaveUp > timeout+slack {
			t.Logf("cycle %d: the frozen bridge gave its shards up after %s, over the session timeout %s (+%s slack): a loaded machine?", c+1, gaveUp, timeout, slack)
		}
		if committedAfter != committedFrozen {
			t.Errorf("cycle %d: the frozen bridge counted %.0f rows committed after the freeze", c+1, committedAfter-committedFrozen)
		}
		if copying && ev-evictedBefore < 1 {
			t.Errorf("cycle %d: the freeze in a COPY was not ended by the other bridge (no eviction counted): it was not stuck in the COPY, or a server timeout reached it", c+1)
		}

		// Thaw: the frozen bridge's old sessions are gone; it joins again
		// and takes its share back.
		bkPause(2 * time.Second) // a deliberate gap: the frozen bridge stays cut off a while
		proxies[owner].Thaw()
		testenv.Await(t, shared, "cycle %d after the thaw, the bridges did not share the shards again: %s", c+1, shLast(mon))
	}

	rep := l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	st := mon.Stop()
	if st.MaxHolders > 1 {
		t.Errorf("a bridge lock had %d holders in pg_locks", st.MaxHolders)
	}
	if st.Samples < 20 || st.Errors > st.Samples/2 {
		t.Errorf("monitor: %d samples, %d failed (last: %v): the run was not watched", st.Samples, st.Errors, st.LastErr)
	}
	bkAssertDrained(t, bkRedis(t), svc.Postgres, keys, time.Minute)

	r := ResultOf(rep)
	r.Scenario, r.Load = "12. bridge partitioned from PostgreSQL", LoadDesc(rep)
	r.Faults = fmt.Sprintf("the TCP path to PostgreSQL of one of two bridges sharing the shards (2 each) frozen ×%d (a proxy stops forwarding both ways, sockets kept open), thawed once the other took over; it then took its share back", len(onCopy))
	r.Notes = fmt.Sprintf("--bridge-session-timeout %s --lock-retry %s, takeover bound %s: %s; max takeover %s; %.0f evictions in all; "+
		"%d samples every 50 ms of pg_locks: bridge locks with >1 holder %d; the frozen bridge committed nothing after a freeze; "+
		"%d samples where the bridges' shards_owned summed over %d (the frozen bridge still counting shards whose sessions PostgreSQL had ended: a belief, not a writer)",
		timeout, lockRetry, bound, strings.Join(notes, "; "), maxTook.Round(time.Millisecond), evicted, st.Samples, st.MultiHolder, st.Over, bkShards)
	Record(t, r)
	for i := range 2 {
		mon.Bridge(i).Stop(20 * time.Second)
	}
	edges.Stop(20 * time.Second)
}

// bpProxy forwards TCP between clients and one upstream until Freeze: then it
// stops forwarding in both directions (and does not dial upstream for new
// clients) while keeping every socket open, as a stuck middlebox or a
// partition behind a proxy does. Thaw resumes.
type bpProxy struct {
	t        *testing.T
	ln       net.Listener
	upstream string
	url      string

	mu     sync.Mutex
	thawed chan struct{} // closed while forwarding; replaced on Freeze
	onCopy chan struct{} // armed by FreezeOnCopy: closed when the freeze begins
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func bpStartProxy(t *testing.T, dbURL string) *bpProxy {
	t.Helper()
	ln, upstream, proxyURL := bkListen(t, dbURL)
	p := &bpProxy{t: t, ln: ln, upstream: upstream, url: proxyURL, conns: map[net.Conn]struct{}{}, thawed: make(chan struct{})}
	close(p.thawed)
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// URL is the database URL through the proxy.
func (p *bpProxy) URL() string { return p.url }

// Freeze stops all forwarding; sockets stay open.
func (p *bpProxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
		p.thawed = make(chan struct{})
	default:
	}
}

// FreezeOnCopy freezes the proxy right after it forwards the next CopyData
// message (rows of a COPY) of any client: the server then waits for the rest
// of the COPY. The channel is closed when the freeze begins.
func (p *bpProxy) FreezeOnCopy() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onCopy = make(chan struct{})
	return p.onCopy
}

// copied is called after a CopyData message went through.
func (p *bpProxy) copied() {
	p.mu.Lock()
	ch := p.onCopy
	p.onCopy = nil
	p.mu.Unlock()
	if ch != nil {
		p.Freeze()
		close(ch)
	}
}

// Thaw resumes forwarding.
func (p *bpProxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
	default:
		close(p.thawed)
	}
}

// gate waits while the proxy is frozen; false once it is closed.
func (p *bpProxy) gate() bool {
	for {
		p.mu.Lock()
		ch, closed := p.thawed, p.closed
		p.mu.Unlock()
		if closed {
			return false
		}
		select {
		case <-ch:
			return true
		case <-time.After(50 * time.Millisecond): // re-check closed
		}
	}
}

func (p *bpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *bpProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *bpProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(client) {
			return
		}
		p.wg.Go(func() {
			defer client.Close()
			if !p.gate() {
				return
			}
			server, err := net.Dial("tcp", p.upstream)
			if err != nil || !p.track(server) {
				return
			}
			defer server.Close()
			var pair sync.WaitGroup
			pair.Go(func() { p.clientToServer(client, server) })
			pair.Go(func() { p.pipe(client, server) })
			pair.Wait()
		})
	}
}

// clientToServer forwards the client's messages one by one (so that a freeze
// can land right after a CopyData message), holding still while frozen.
func (p *bpProxy) clientToServer(client, server net.Conn) {
	defer client.Close()
	defer server.Close()
	r := bufio.NewReaderSize(client, 64<<10)
	// Start-up; held while frozen.
	msg, code, ok := bkStartup(r, client)
	if !ok || !p.gate() {
		return
	}
	if _, err := server.Write(msg); err != nil {
		return
	}
	if code == bkCancelRequest { // nothing follows
		return
	}
	var buf []byte
	for {
		if !p.gate() {
			return
		}
		msg, err := bkMsg(r, buf)
		if err != nil {
			return
		}
		buf = msg
		if !p.gate() {
			return
		}
		if _, err := server.Write(msg); err != nil {
			return
		}
		if msg[0] == 'd' {
			p.copied()
		}
	}
}

// pipe copies src to dst, holding still (reading nothing, writing nothing)
// while the proxy is frozen. When one side ends, both are closed.
func (p *bpProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		if !p.gate() {
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			// Data read just as the freeze began is held, not forwarded.
			if !p.gate() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
