package faults

// Scenario 1: the bridge killed with SIGKILL again and again under load, some
// kills landing at exact moments of its work: while it streams a COPY's rows,
// and after PostgreSQL committed a batch but before the bridge heard of it
// (so before it could trim the stream).

import (
	"bufio"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"firehose/internal/testenv"
	"firehose/stream"
)

// bkShards is the shard count of the deployments these scenarios start (the
// default of --shards).
const bkShards = 4

// TestBridgeKilledRepeatedly runs the edges (HTTP gateway and MQTT broker)
// under load while a separate bridge process is killed with SIGKILL and
// restarted, then checks that every acknowledged reading landed exactly
// once, that the checkpoints account for every row, and that the streams were
// trimmed. The bridge reaches PostgreSQL through a proxy that reads the wire
// protocol, so some kills land deliberately: while the bridge sends a COPY's
// rows, and right after PostgreSQL answered COMMIT (the bridge dies with the
// batch committed but neither told nor trimmed); the rest at random moments
// (start-up, waiting for locks, buffering, reading).
func TestBridgeKilledRepeatedly(t *testing.T) {
	skipShort(t)
	t.Parallel()
	svc := SharedServices(t)
	edges := StartStack(t, svc, "--roles", "broker,httpgw")
	proxy := bkStartProxy(t, svc.Postgres)
	viaProxy := svc
	viaProxy.Postgres = proxy.URL()
	rdb := bkRedis(t)
	keys := stream.Streams{Prefix: svc.Prefix, Count: bkShards}.Keys()
	// Large batches and a few hundred ms of age: each shard commits a few
	// times a second, and after a kill the backlog makes the next COPY long.
	bridgeFlags := []string{"--batch-size", "20000", "--batch-age", "300ms"}

	kills := scale(5, 20)
	l := StartLoad(t, edges, LoadOpts{Rate: 3000, Duration: scale(15*time.Second, 60*time.Second)})

	plan := []bkKill{bkDuringCopy, bkAfterCommit, bkRandom}
	var counts [3]int
	var untrimmed int // commit kills after which the committed batch was still in Redis
	for i := range kills {
		gen := proxy.NextGen()
		b := StartBridge(t, viaProxy, bridgeFlags...)
		kind := plan[i%len(plan)]
		switch kind {
		case bkRandom:
			// Any moment from start-up on: connecting, waiting for the
			// locks the dead one's sessions held, reading, buffering.
			bkPause(time.Duration(rand.IntN(1500)) * time.Millisecond)
			bkKillRunning(t, b, i+1)
		default:
			// Let it work a random while first, so the kill does not
			// always hit the first batch after a restart.
			bkPause(time.Duration(rand.IntN(800)) * time.Millisecond)
			fired := proxy.Arm(gen, kind, b.Proc.Kill)
			select {
			case <-fired:
			case <-time.After(20 * time.Second):
				if proxy.Disarm() {
					t.Logf("kill %d: no %s within 20s; killed at random instead", i+1, kind)
					bkKillRunning(t, b, i+1)
					kind = bkRandom
				} else {
					<-fired
				}
			}
		}
		if code, ok := b.Proc.Wait(5 * time.Second); !ok || code != -1 {
			t.Fatalf("kill %d: the bridge did not die of the SIGKILL (exited %v, code %d); output: %s", i+1, ok, code, b.Proc.Output())
		}
		counts[kind]++
		if kind == bkAfterCommit {
			// The batch was committed and the bridge never learned it, so
			// it cannot have trimmed it: some stream must still hold
			// entries at or below its checkpoint. Proves the kill hit the
			// window between commit and trim.
			if n := bkCommittedUntrimmed(t, rdb, svc.Postgres, keys); n > 0 {
				untrimmed++
			} else {
				t.Errorf("kill %d after a COMMIT: no stream holds committed entries; the kill missed the window", i+1)
			}
		}
		t.Logf("kill %d (%s): %d rows committed so far", i+1, kind, QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings"))
		bkPause(time.Duration(rand.IntN(300)) * time.Millisecond)
	}

	// The survivor: it resumes from the checkpoints and drains the backlog.
	final := StartBridge(t, svc, bridgeFlags...)
	rep := l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	bkAssertDrained(t, rdb, svc.Postgres, keys, time.Minute)

	r := ResultOf(rep)
	r.Scenario, r.Load = "1. bridge SIGKILL", LoadDesc(rep)
	r.Faults = fmt.Sprintf("SIGKILL ×%d, %d during COPY, %d right after commit, %d at random", kills, counts[bkDuringCopy], counts[bkAfterCommit], counts[bkRandom])
	r.Notes = fmt.Sprintf("separate bridge process (--batch-size 20000 --batch-age 300ms) behind a PostgreSQL wire proxy that kills it on a COPY's rows or on the server's COMMIT answer; %d of %d after-commit kills left their committed batch untrimmed in Redis (checked); after the load: checkpoints account for every row, streams trimmed to 0",
		untrimmed, counts[bkAfterCommit])
	Record(t, r)
	final.Stop(20 * time.Second)
	edges.Stop(20 * time.Second)
}

// bkKill is where a kill lands.
type bkKill int

const (
	bkDuringCopy  bkKill = iota // the bridge has sent COPY rows, not CopyDone
	bkAfterCommit               // PostgreSQL answered COMMIT of a batch; the bridge has not read it
	bkRandom                    // at a random moment
)

func (k bkKill) String() string {
	return [...]string{"during COPY", "after commit", "at random"}[k]
}

// bkKillRunning SIGKILLs bridge b, failing the test if it had already exited
// by itself.
func bkKillRunning(t *testing.T, b *Stack, n int) {
	t.Helper()
	if b.Proc.Exited() {
		t.Fatalf("kill %d: the bridge exited by itself; output: %s", n, b.Proc.Output())
	}
	b.Proc.Kill()
}

// bkPause waits d. Not an assertion: it spreads the kills over the bridge's
// work.
func bkPause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

// bkRedis is a client of the tests' Redis, configured as firehose's.
func bkRedis(t *testing.T) *redis.Client {
	t.Helper()
	return outRedis(t, testenv.RedisURL())
}

// bkCheckpoints reads bridge_checkpoints: last id by stream.
func bkCheckpoints(t *testing.T, dbURL string) map[string]stream.StreamID {
	t.Helper()
	ctx, conn, done := dbConn(t, dbURL, 30*time.Second)
	defer done()
	rows, err := conn.Query(ctx, "SELECT stream, last_id FROM bridge_checkpoints")
	if err != nil {
		t.Fatal(err)
	}
	cps := map[string]stream.StreamID{}
	var key, last string
	_, err = pgx.ForEachRow(rows, []any{&key, &last}, func() error {
		id, err := stream.ParseStreamID(last)
		if err != nil {
			return fmt.Errorf("checkpoint of %s: %w", key, err)
		}
		cps[key] = id
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return cps
}

// bkCommittedUntrimmed counts the streams whose oldest entry is at or below
// their checkpoint: committed to PostgreSQL and still in Redis.
func bkCommittedUntrimmed(t *testing.T, rdb *redis.Client, dbURL string, keys []string) int {
	t.Helper()
	cps := bkCheckpoints(t, dbURL)
	n := 0
	for _, k := range keys {
		cp, ok := cps[k]
		if !ok {
			continue
		}
		first, err := rdb.XRangeN(context.Background(), k, "-", "+", 1).Result()
		if err != nil {
			t.Fatalf("XRANGE %s: %v", k, err)
		}
		if len(first) == 0 {
			continue
		}
		id, err := stream.ParseStreamID(first[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if !cp.Less(id) {
			n++
		}
	}
	return n
}

// bkAssertDrained waits until every stream is empty (trimmed below its
// checkpoint after the last commit), then checks that each checkpoint is the
// stream's last id and that the checkpoints' row counts add up to the rows
// in readings: no batch wrote rows without moving its checkpoint, or moved it
// without its rows.
func bkAssertDrained(t *testing.T, rdb *redis.Client, dbURL string, keys []string, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	xlen := func() (int64, error) {
		var total int64
		for _, k := range keys {
			n, err := rdb.XLen(ctx, k).Result()
			if err != nil {
				return 0, err
			}
			total += n
		}
		return total, nil
	}
	var left int64
	testenv.Eventually(t, timeout, func() bool {
		n, err := xlen()
		left = n
		return err == nil && n == 0
	}, "streams not trimmed: %d entries left in %v", left, keys)
	cps := bkCheckpoints(t, dbURL)
	for _, k := range keys {
		info, err := rdb.XInfoStream(ctx, k).Result()
		if err != nil {
			t.Fatalf("XINFO STREAM %s: %v", k, err)
		}
		last, err := stream.ParseStreamID(info.LastGeneratedID)
		if err != nil {
			t.Fatal(err)
		}
		if cp, ok := cps[k]; !ok || cp != last {
			t.Errorf("checkpoint of %s = %v (present %v), want the stream's last id %v", k, cp, ok, last)
		}
	}
	rows := QueryInt(t, dbURL, "SELECT count(*) FROM readings")
	sum := QueryInt(t, dbURL, "SELECT coalesce(sum(rows), 0)::bigint FROM bridge_checkpoints WHERE stream = ANY($1)", keys)
	if rows != sum {
		t.Errorf("bridge_checkpoints count %d rows, readings holds %d", sum, rows)
	}
}

// bkLockKey is the bridge's advisory lock id of a stream (bridge.lockKey).
func bkLockKey(stream string) int64 {
	h := fnv.New64a()
	h.Write([]byte("firehose bridge "))
	h.Write([]byte(stream))
	return int64(h.Sum64())
}

// bkProxy is a loopback proxy between a bridge and PostgreSQL that follows
// the wire protocol's message framing, so that a test can SIGKILL the bridge
// at an exact point of a transaction. Each accepted connection belongs to the
// generation current when it was accepted (one generation per bridge
// process), so a dying bridge's late messages never trigger the next kill.
type bkProxy struct {
	t        *testing.T
	ln       net.Listener
	upstream string
	url      string
	gen      atomic.Int64

	mu       sync.Mutex
	armed    bool
	armedGen int64
	kind     bkKill
	kill     func()
	fired    chan struct{}
	conns    map[net.Conn]struct{}
	closed   bool
	wg       sync.WaitGroup
}

// bkStartProxy listens on a free loopback port and forwards to the server of
// dbURL; it stops when the test ends.
func bkStartProxy(t *testing.T, dbURL string) *bkProxy {
	t.Helper()
	ln, upstream, proxyURL := bkListen(t, dbURL)
	p := &bkProxy{t: t, ln: ln, upstream: upstream, url: proxyURL, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// bkListen is the set-up of a proxy to the PostgreSQL server of dbURL (this
// file's and bridge_partition_test.go's): a listener on a free loopback
// port, the server's host:port, and the database URL through the proxy,
// with sslmode=disable (the proxy reads the messages: no TLS).
func bkListen(t *testing.T, dbURL string) (ln net.Listener, upstream, proxyURL string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upstream = u.Host
	if !strings.Contains(upstream, ":") {
		upstream += ":5432"
	}
	u.Host = ln.Addr().String()
	q := u.Query()
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	return ln, upstream, u.String()
}

// URL is the database URL through the proxy.
func (p *bkProxy) URL() string { return p.url }

// NextGen starts a new generation: connections accepted from now on belong
// to the bridge started next.
func (p *bkProxy) NextGen() int64 { return p.gen.Add(1) }

// Arm makes the next event of kind on a connection of generation gen call
// kill (which must SIGKILL the bridge and wait for it to exit) before the
// message is passed on; the returned channel closes after kill returned.
func (p *bkProxy) Arm(gen int64, kind bkKill, kill func()) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed, p.armedGen, p.kind, p.kill = true, gen, kind, kill
	p.fired = make(chan struct{})
	return p.fired
}

// Disarm cancels the arming; false when the kill already fired (or is firing).
func (p *bkProxy) Disarm() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.armed
	p.armed = false
	return was
}

// trigger fires the armed kill if it matches; true when it did (the caller
// then drops the connection).
func (p *bkProxy) trigger(gen int64, kind bkKill) bool {
	p.mu.Lock()
	if !p.armed || p.armedGen != gen || p.kind != kind {
		p.mu.Unlock()
		return false
	}
	p.armed = false
	kill, fired := p.kill, p.fired
	p.mu.Unlock()
	kill()
	close(fired)
	return true
}

func (p *bkProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *bkProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *bkProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *bkProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		gen := p.gen.Load()
		server, err := net.DialTimeout("tcp", p.upstream, 10*time.Second)
		if err != nil {
			client.Close()
			continue
		}
		if !p.track(client) || !p.track(server) {
			client.Close()
			server.Close()
			return
		}
		st := &bkConnState{}
		var once sync.Once
		done := func() {
			once.Do(func() {
				p.untrack(client)
				p.untrack(server)
			})
		}
		p.wg.Go(func() {
			defer done()
			p.clientToServer(gen, st, client, server)
		})
		p.wg.Go(func() {
			defer done()
			p.serverToClient(gen, st, server, client)
		})
	}
}

// bkConnState is what the two directions of one connection share.
type bkConnState struct {
	copied atomic.Bool // COPY rows went by since the last COMMIT
}

// bkU32 reads a big-endian uint32 (encoding/binary's name is the harness's
// binary path in this package).
func bkU32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// bkMsg reads one typed message (type byte, int32 length, body) into buf.
func bkMsg(r *bufio.Reader, buf []byte) ([]byte, error) {
	hdr, err := r.Peek(5)
	if err != nil {
		return nil, err
	}
	n := int(bkU32(hdr[1:5])) + 1
	if n < 5 || n > 1<<30 {
		return nil, fmt.Errorf("bad message length %d", n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err = io.ReadFull(r, buf)
	return buf, err
}

// bkCancelRequest is the code of a CancelRequest start-up message.
const bkCancelRequest = 80877102

// bkStartup reads a client's untyped start-up messages (length, then body)
// from r, refuses an SSLRequest or GSSENCRequest with 'N' (the URL says
// sslmode=disable, so it should not come), and returns the first other one
// (a StartupMessage or a CancelRequest) and its code, for the caller to
// forward; ok is false when the client went or sent garbage.
func bkStartup(r *bufio.Reader, client net.Conn) (msg []byte, code uint32, ok bool) {
	for {
		hdr, err := r.Peek(8)
		if err != nil {
			return nil, 0, false
		}
		n := int(bkU32(hdr[:4]))
		code := bkU32(hdr[4:8])
		if n < 8 || n > 1<<20 {
			return nil, 0, false
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(r, msg); err != nil {
			return nil, 0, false
		}
		if code == 80877103 || code == 80877104 { // SSLRequest, GSSENCRequest
			if _, err := client.Write([]byte{'N'}); err != nil {
				return nil, 0, false
			}
			continue
		}
		return msg, code, true
	}
}

// forward writes msg and flushes when nothing more is waiting to be read, so
// that a burst of messages goes out in one write.
func bkForward(w *bufio.Writer, r *bufio.Reader, msg []byte) error {
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if r.Buffered() == 0 {
		return w.Flush()
	}
	return nil
}

func (p *bkProxy) clientToServer(gen int64, st *bkConnState, client, server net.Conn) {
	r := bufio.NewReaderSize(client, 64<<10)
	w := bufio.NewWriterSize(server, 64<<10)
	// Start-up; a CancelRequest is passed on.
	msg, code, ok := bkStartup(r, client)
	if !ok {
		return
	}
	if _, err := w.Write(msg); err != nil || w.Flush() != nil {
		return
	}
	if code == bkCancelRequest { // nothing follows
		_, _ = io.Copy(server, r)
		return
	}
	var buf []byte
	for {
		msg, err := bkMsg(r, buf)
		if err != nil {
			return
		}
		buf = msg
		if msg[0] == 'd' { // CopyData: the bridge is streaming a batch's rows
			st.copied.Store(true)
			// Let these rows reach the server, then kill the bridge before
			// it sends more or CopyDone.
			if _, err := w.Write(msg); err != nil || w.Flush() != nil {
				return
			}
			if p.trigger(gen, bkDuringCopy) {
				return
			}
			continue
		}
		if err := bkForward(w, r, msg); err != nil {
			return
		}
	}
}

func (p *bkProxy) serverToClient(gen int64, st *bkConnState, server, client net.Conn) {
	r := bufio.NewReaderSize(server, 64<<10)
	w := bufio.NewWriterSize(client, 64<<10)
	var buf []byte
	for {
		msg, err := bkMsg(r, buf)
		if err != nil {
			return
		}
		buf = msg
		// CommandComplete "COMMIT" of a transaction that COPYed rows: the
		// batch and its checkpoint are committed. Kill before the bridge
		// hears of it.
		if msg[0] == 'C' && string(msg[5:]) == "COMMIT\x00" && st.copied.Swap(false) {
			if p.trigger(gen, bkAfterCommit) {
				return
			}
		}
		if err := bkForward(w, r, msg); err != nil {
			return
		}
	}
}
