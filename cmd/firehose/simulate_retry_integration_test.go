package main

import (
	bin "encoding/binary"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"firehose/internal/testenv"
	"firehose/simulator"
)

// startingUpProxy forwards PostgreSQL connections to a server, except that
// while refuse is above zero each new connection is answered as a server
// that is starting up answers (FATAL, SQLSTATE 57P03) and closed. Drop
// closes every forwarded connection, as a restart of the server would.
type startingUpProxy struct {
	ln      net.Listener
	target  string
	refuse  atomic.Int64
	refused atomic.Int64
	mu      sync.Mutex
	conns   []net.Conn
}

func startStartingUpProxy(t *testing.T, target string) *startingUpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", testenv.FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	p := &startingUpProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.Drop() })
	go p.accept()
	return p
}

func (p *startingUpProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.refuse.Add(-1) >= 0 {
			p.refused.Add(1)
			go startingUp(c)
			continue
		}
		p.refuse.Store(0)
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(s, c); s.Close() }()
		go func() { _, _ = io.Copy(c, s); c.Close() }()
	}
}

// Drop closes every forwarded connection.
func (p *startingUpProxy) Drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// startingUp reads the client's startup message and answers it with the
// error PostgreSQL sends while it replays its WAL after a restart.
func startingUp(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var n [4]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return
	}
	if _, err := io.CopyN(io.Discard, c, int64(bin.BigEndian.Uint32(n[:]))-4); err != nil {
		return
	}
	var body []byte
	for _, f := range [][2]string{{"S", "FATAL"}, {"V", "FATAL"}, {"C", "57P03"}, {"M", "the database system is starting up"}} {
		body = append(append(append(body, f[0]...), f[1]...), 0)
	}
	body = append(body, 0)
	msg := append([]byte{'E'}, bin.BigEndian.AppendUint32(nil, uint32(len(body)+4))...)
	_, _ = c.Write(append(msg, body...))
}

// TestIntegrationSimulateVerifyRetriesPostgresStartingUp restarts (as far as
// the simulator can tell) the target's PostgreSQL between the landing wait
// and the verification: its connections drop, and the next ones are refused
// with SQLSTATE 57P03 (the database system is starting up), as right after a
// restart. The verification retries until the database answers and reports
// every reading landed, instead of failing the run.
func TestIntegrationSimulateVerifyRetriesPostgresStartingUp(t *testing.T) {
	t.Parallel()
	st := startSimStack(t)
	u, err := url.Parse(st.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startStartingUpProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()

	cfg := simulator.DefaultConfig()
	cfg.HTTP, cfg.Postgres, cfg.Metrics = st.http, u.String(), "off"
	cfg.Devices, cfg.Rate, cfg.Duration, cfg.Batch, cfg.LandTimeout = 5, 500, time.Second, 5, 60*time.Second
	cfg.RunID = "start" + testenv.ID()
	cfg.BeforeVerify = func() error {
		proxy.refuse.Store(4)
		proxy.Drop()
		return nil
	}
	rep, err := simulator.Run(t.Context(), cfg, nil, nil)
	if err != nil {
		t.Fatalf("the run failed (%d connections were refused with 57P03): %v", proxy.refused.Load(), err)
	}
	if proxy.refused.Load() == 0 {
		t.Fatalf("no connection was refused: the test did not test the retry")
	}
	if !rep.OK || rep.Landing == nil || rep.Landing.Missing != 0 || rep.Send.Acked == 0 {
		t.Fatalf("report OK %v, acked %d, landing %+v", rep.OK, rep.Send.Acked, rep.Landing)
	}
	t.Logf("%d connections refused with 57P03; verified %d readings", proxy.refused.Load(), rep.Landing.Readings)
}
