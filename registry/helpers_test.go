package registry

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"firehose/broker"
	"firehose/ingest"
	"firehose/internal/mqtttest"
)

var discard = slog.New(slog.DiscardHandler)

// MQTT 5 reason codes the tests expect.
const (
	codeBadCredentials    = 0x86
	codeNotAuthorized     = 0x87
	codeServerUnavailable = 0x88
)

// acceptAll is a broker.Producer that takes every reading: these tests are
// about who connects, not where readings go.
type acceptAll struct{}

func (acceptAll) Add(context.Context, []ingest.Reading) error            { return nil }
func (acceptAll) Enqueue(ingest.Reading) error                           { return nil }
func (acceptAll) AddDeadLetter(context.Context, ingest.DeadLetter) error { return nil }

// startBroker runs a broker on a loopback port with src as its credentials
// until the test ends, and returns its address.
func startBroker(t *testing.T, src broker.CredentialSource) string {
	t.Helper()
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", AuthFile: broker.AuthRegistry, Credentials: src, ShutdownTimeout: 2 * time.Second},
		acceptAll{}, discard, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return b.Addr("tcp").String()
}

// client is a connected MQTT 5 client; gone closes when the broker
// disconnects it, and reason is then the DISCONNECT's reason code.
type client struct {
	*paho.Client
	gone   chan struct{}
	reason atomic.Int32
}

// connect connects device with secret; it returns the CONNACK's reason code
// (0 when connected) and the client when connected.
func connect(t *testing.T, addr, device, secret string) (byte, *client) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{gone: make(chan struct{})}
	var once sync.Once
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn:          conn,
		PacketTimeout: 15 * time.Second,
		PingHandler:   mqtttest.NoPinger{},
		OnServerDisconnect: func(d *paho.Disconnect) {
			c.reason.Store(int32(d.ReasonCode))
			once.Do(func() { close(c.gone) })
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: device, CleanStart: true, KeepAlive: 30,
		Username: device, UsernameFlag: true, Password: []byte(secret), PasswordFlag: secret != ""})
	if err != nil {
		if ca == nil {
			t.Fatalf("connect %s: %v", device, err)
		}
		return ca.ReasonCode, nil
	}
	t.Cleanup(func() {
		select {
		case <-c.Done():
		default:
			_ = c.Disconnect(&paho.Disconnect{})
		}
	})
	return 0, c
}

// mustConnect connects device with secret or fails the test.
func mustConnect(t *testing.T, addr, device, secret string) *client {
	t.Helper()
	code, c := connect(t, addr, device, secret)
	if code != 0 {
		t.Fatalf("%s with its secret: CONNACK %#x, want 0", device, code)
	}
	return c
}

// disconnected reports whether the broker disconnected c.
func (c *client) disconnected() bool {
	select {
	case <-c.gone:
		return true
	case <-c.Done():
		return true
	default:
		return false
	}
}

// pgConn connects to dbURL for the test.
func pgConn(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// proxy forwards TCP connections on a loopback port to PostgreSQL, until
// Down, which closes every connection and refuses new ones until Up.
type proxy struct {
	ln       net.Listener
	upstream string
	up       atomic.Bool
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func startProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.up.Store(true)
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.Down() })
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) Up() { p.up.Store(true) }

// Down closes every connection through the proxy; new ones are closed at
// once until Up.
func (p *proxy) Down() {
	p.up.Store(false)
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.up.Load() {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go pipe(c, up)
		go pipe(up, c)
	}
}

func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}
