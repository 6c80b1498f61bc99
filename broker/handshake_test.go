package broker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"firehose/internal/testcert"
	"firehose/internal/testenv"
)

// handshakeFixture is a handshakeListener on loopback with a server
// certificate, and a client configuration that trusts it.
type handshakeFixture struct {
	l      *handshakeListener
	client *tls.Config
	counts *prometheus.CounterVec
}

func newHandshakeFixture(t *testing.T, workers int, timeout time.Duration) *handshakeFixture {
	t.Helper()
	certFile, keyFile, pool := testcert.SelfSigned(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counts := newHandshakeCounts()
	l := newHandshakeListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}}, workers, timeout, counts, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = l.Close() })
	return &handshakeFixture{l: l, client: &tls.Config{RootCAs: pool, ServerName: "localhost"}, counts: counts}
}

// count is the handshakes of result, resumed or not.
func (f *handshakeFixture) count(result string) float64 {
	var n float64
	for _, resumed := range []string{"", "true", "false"} {
		n += testutil.ToFloat64(f.counts.WithLabelValues(result, resumed))
	}
	return n
}

// dial connects a TLS client and handshakes in the background; the result
// arrives on the channel.
func (f *handshakeFixture) dial(t *testing.T) (*tls.Conn, <-chan error) {
	t.Helper()
	raw, err := net.Dial("tcp", f.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, f.client)
	t.Cleanup(func() { _ = c.Close() })
	done := make(chan error, 1)
	go func() { done <- c.Handshake() }()
	return c, done
}

// TestHandshakeListener: Accept hands over connections whose handshake is
// complete; with every worker held by a client that sends nothing, a new
// connection waits in the queue (no handshake, no CPU) until the stalled
// one times out; a client that left while queued gets no handshake; Close
// ends Accept.
func TestHandshakeListener(t *testing.T) {
	f := newHandshakeFixture(t, 1, 2*time.Second)
	_, done := f.dial(t)
	c, err := f.l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	tc, ok := c.(*tls.Conn)
	if !ok || !tc.ConnectionState().HandshakeComplete {
		t.Fatalf("Accept returned %T, handshake complete %v; want a handshaken *tls.Conn", c, ok && tc.ConnectionState().HandshakeComplete)
	}
	if err := <-done; err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	_ = c.Close()

	// A client that connects and sends nothing holds the only worker.
	staller, err := net.Dial("tcp", f.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer staller.Close()
	testenv.Await(t, func() bool { return f.l.busy.Load() == 1 }, "the staller reaches the worker")
	// Behind it: one client that leaves while it waits, one that stays.
	leaver, err := net.Dial("tcp", f.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	testenv.Await(t, func() bool { return f.l.queued() == 1 }, "the leaver queues")
	_ = leaver.Close()
	_, done = f.dial(t)
	testenv.Await(t, func() bool { return f.l.queued() == 2 }, "the stayer queues behind the leaver")
	if n := f.count(handshakeOK); n != 1 {
		t.Fatalf("handshakes ok while the worker is held: %v, want 1", n)
	}
	// The staller times out; the leaver is dropped unhandshaken; the
	// stayer gets its handshake.
	c, err = f.l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the stayer's handshake: %v", err)
	}
	_ = c.Close()
	for result, want := range map[string]float64{handshakeOK: 2, handshakeFailed: 1, handshakeGone: 1} {
		if n := f.count(result); n != want {
			t.Errorf("handshakes %s: %v, want %v", result, n, want)
		}
	}

	if err := f.l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// TestHandshakeListenerCloseEndsHandshakes: Close does not wait for a
// stalled handshake's timeout.
func TestHandshakeListenerCloseEndsHandshakes(t *testing.T) {
	f := newHandshakeFixture(t, 2, time.Hour)
	staller, err := net.Dial("tcp", f.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer staller.Close()
	testenv.Await(t, func() bool { return f.l.busy.Load() == 1 }, "the staller reaches a worker")
	closed := make(chan error, 1)
	go func() { closed <- f.l.Close() }()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}
