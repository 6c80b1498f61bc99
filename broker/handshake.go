package broker

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// handshakeListener is the TLS listener (--mqtt-tls-addr): it accepts
// every connection at once, queues it in arrival order, and hands mochi
// only connections whose TLS handshake is complete, at most
// maxHandshakes handshakes running at a time.
//
// Why: a handshake costs about a millisecond of CPU (the key exchange, the
// server's signature, a client certificate's verification). With
// crypto/tls's own listener, mochi starts each in a goroutine of its own,
// so a fleet reconnecting at once (10,000 devices after a restart) shares
// the CPU among all of them: each takes as long as the whole storm, past
// its client's patience (about 10 s), the client gives up and comes back,
// and the work done for it is wasted — the storm feeds itself. Bounded,
// the handshakes run first come first served: each ends in milliseconds,
// the queue waits without costing CPU, and a connection whose client gave
// up while queued is closed without a handshake (clientGone). Accepting at
// once also keeps the kernel's accept queue (net.core.somaxconn) from
// overflowing, which would drop SYNs and leave devices to TCP's
// retransmission backoff.
type handshakeListener struct {
	net.Listener // the TCP listener
	tc           *tls.Config
	timeout      time.Duration // for one handshake: a client that stalls it holds a worker this long
	counts       *prometheus.CounterVec
	log          *slog.Logger

	ready  chan net.Conn   // handshaken, for Accept
	ctx    context.Context // ends with Close, and with it every handshake under way
	cancel context.CancelFunc
	once   sync.Once
	wg     sync.WaitGroup // the accept loop and the workers

	busy atomic.Int64 // handshakes under way

	mu      sync.Mutex
	queue   []net.Conn    // accepted, not handshaken yet
	more    chan struct{} // signalled when queue grows (capacity 1)
	acceptE error         // why the accept loop ended
}

// Handshake results, counted in firehose_mqtt_tls_handshakes_total.
const (
	handshakeOK     = "ok"
	handshakeFailed = "failed"      // a bad certificate, a protocol error, the timeout
	handshakeGone   = "client_gone" // its client left while it queued: none made
	handshakeShed   = "shed"        // the queue was full: closed at once
)

// newHandshakeCounts makes firehose_mqtt_tls_handshakes_total, by result
// and, for a handshake made (ok, failed), whether the client's session
// resumed (resumed="true": the server accepted its session ticket, an
// abbreviated handshake; a failure then is the certificate in the session
// refused, e.g. revoked since). Six series.
func newHandshakeCounts() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "firehose_mqtt_tls_handshakes_total",
		Help: "TLS handshakes of --mqtt-tls-addr's connections, made first come first served, a bounded number at a time, by result (ok; failed: a refused certificate, a protocol error, 10 s passed; client_gone: its client left while it waited, none made; shed: 100,000 waited already, closed at once) and, for ok and failed, resumed: true when the client resumed its TLS session with a session ticket (an abbreviated handshake: no signature, no certificate chain verification; --mqtt-tls-ticket-keys makes tickets outlive a restart), false for a full handshake.",
	}, []string{"result", "resumed"})
	for _, r := range []string{handshakeOK, handshakeFailed} {
		c.WithLabelValues(r, "true")
		c.WithLabelValues(r, "false")
	}
	c.WithLabelValues(handshakeGone, "")
	c.WithLabelValues(handshakeShed, "")
	return c
}

// resumedLabel is the resumed label of a handshake made.
func resumedLabel(c *tls.Conn) string {
	if c.ConnectionState().DidResume {
		return "true"
	}
	return "false"
}

// maxHandshakes bounds the handshakes running at once: enough to keep the
// CPUs busy while handshakes wait on their clients' replies (a TLS 1.3
// handshake waits one round trip for the client's Finished, longer when
// the client is slow), few enough that each ends in milliseconds.
var maxHandshakes = 128 * runtime.GOMAXPROCS(0)

// queued is the number of connections waiting for a handshake.
func (l *handshakeListener) queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}

// maxQueued bounds the connections waiting for a handshake; past it a new
// connection is closed at once (its client retries).
const maxQueued = 100_000

// handshakeTimeout bounds one handshake.
const handshakeTimeout = 10 * time.Second

// newHandshakeListener serves ln's connections over TLS with tc, workers
// handshakes at a time (maxHandshakes), each bounded by timeout
// (handshakeTimeout), until Close.
func newHandshakeListener(ln net.Listener, tc *tls.Config, workers int, timeout time.Duration, counts *prometheus.CounterVec, log *slog.Logger) *handshakeListener {
	l := &handshakeListener{Listener: ln, tc: tc, timeout: timeout, counts: counts, log: log,
		ready: make(chan net.Conn), more: make(chan struct{}, 1)}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1 + workers)
	go l.acceptLoop()
	for range workers {
		go l.worker()
	}
	return l
}

// acceptLoop accepts until the listener closes, queueing each connection.
func (l *handshakeListener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			l.mu.Lock()
			l.acceptE = err
			l.mu.Unlock()
			l.stop()
			return
		}
		l.mu.Lock()
		closed, full := l.ctx.Err() != nil, len(l.queue) >= maxQueued
		if !closed && !full {
			l.queue = append(l.queue, c)
		}
		l.mu.Unlock()
		if closed {
			_ = c.Close()
			return
		}
		if full {
			l.counts.WithLabelValues(handshakeShed, "").Inc()
			_ = c.Close()
			continue
		}
		select {
		case l.more <- struct{}{}:
		default:
		}
	}
}

// next takes the oldest queued connection, waiting for one; nil once the
// listener is closed.
func (l *handshakeListener) next() net.Conn {
	for {
		l.mu.Lock()
		if len(l.queue) > 0 {
			c := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			if len(l.queue) > 0 { // wake another worker for the rest
				select {
				case l.more <- struct{}{}:
				default:
				}
			}
			l.mu.Unlock()
			return c
		}
		l.mu.Unlock()
		select {
		case <-l.more:
		case <-l.ctx.Done():
			return nil
		}
	}
}

// worker handshakes queued connections one at a time and hands them to
// Accept.
func (l *handshakeListener) worker() {
	defer l.wg.Done()
	for {
		raw := l.next()
		if raw == nil {
			return
		}
		if clientGone(raw) {
			l.counts.WithLabelValues(handshakeGone, "").Inc()
			_ = raw.Close()
			continue
		}
		c := tls.Server(raw, l.tc)
		ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
		l.busy.Add(1)
		err := c.HandshakeContext(ctx)
		l.busy.Add(-1)
		cancel()
		if err != nil {
			resumed := resumedLabel(c)
			l.counts.WithLabelValues(handshakeFailed, resumed).Inc()
			l.log.Debug("mqtt tls handshake failed", "remote", raw.RemoteAddr().String(), "resumed", resumed, "err", err)
			_ = c.Close()
			continue
		}
		l.counts.WithLabelValues(handshakeOK, resumedLabel(c)).Inc()
		select {
		case l.ready <- c:
		case <-l.ctx.Done():
			_ = c.Close()
			return
		}
	}
}

// Accept returns the next connection whose handshake is complete.
func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.acceptE != nil {
			return nil, l.acceptE
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting, ends the handshakes under way and closes the
// connections still queued, and waits for the accept loop and the workers.
func (l *handshakeListener) Close() error {
	err := l.stop()
	l.wg.Wait()
	return err
}

// stop is Close without the wait (the accept loop calls it when the
// listener fails).
func (l *handshakeListener) stop() error {
	var err error
	l.once.Do(func() {
		l.cancel()
		err = l.Listener.Close()
		l.mu.Lock()
		for _, c := range l.queue {
			_ = c.Close()
		}
		l.queue = nil
		l.mu.Unlock()
	})
	return err
}
