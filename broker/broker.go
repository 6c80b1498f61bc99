package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"

	"firehose/ingest"
	"firehose/internal/clientcert"
	"firehose/internal/ticketkeys"
	"firehose/mqttmsg"
	"firehose/sparkplug"
)

// ackGrace is how long the drain waits, after the last in-flight publish was
// stored, for mochi to write its acknowledgement before clients are
// disconnected (it writes it right after the hook returns).
const ackGrace = 100 * time.Millisecond

// credentialsCheckInterval is how often the credentials file is checked for
// changes.
const credentialsCheckInterval = 2 * time.Second

// Broker is the embedded MQTT broker; see the package comment.
type Broker struct {
	cfg    Config
	srv    *mqtt.Server
	auth   *authHook   // who connects, publishes and reads
	ingest *ingestHook // the publish path to the producer
	bounds *boundsHook // sessions, wills and retained messages within bounds
	flow   *flowHook   // each MQTT 5 client's Receive Maximum
	// tickets are the TLS listener's session ticket keys
	// (--mqtt-tls-ticket-keys), or nil.
	tickets *ticketkeys.Keys
	log     *slog.Logger
	stop    context.CancelFunc // ends the hooks' ctx after the drain

	mu      sync.Mutex
	lns     map[string]net.Listener // by listener id: tcp, tls, ws
	started bool
}

// New builds the broker from cfg (zero fields take their defaults); it does
// not listen yet. p stores the readings; reg receives the broker's metrics.
func New(cfg Config, p Producer, logger *slog.Logger, reg prometheus.Registerer) (*Broker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var spb *sparkplug.Tracker
	if cfg.Sparkplug {
		store := cfg.SparkplugStore
		if store == nil {
			store = sparkplug.NewMemoryStore()
		}
		spb = sparkplug.NewTracker(store)
		spb.MaxNodes, spb.MaxNodeBytes, spb.StateTTL = cfg.SparkplugMaxNodes, cfg.SparkplugMaxNodeBytes, cfg.SparkplugStateTTL
	}
	read, err := mqttmsg.New(mqttmsg.Config{Topic: cfg.Topic, Rules: cfg.Rules, Sparkplug: spb, Limits: cfg.Limits})
	if err != nil {
		return nil, err
	}
	log := logger.With("component", "broker")
	ctx, cancel := context.WithCancel(context.Background())
	ah := &authHook{
		maxKA: uint16(cfg.MaxKeepAlive / time.Second),
		log:   log,
		ctx:   ctx,
	}
	ih := &ingestHook{
		read: read,
		spb:  spb,
		p:    p,
		log:  log,
		ctx:  ctx,
	}
	bh := &boundsHook{maxPkt: uint32(cfg.MaxPacket)}
	var certs *clientcert.Verifier
	if cfg.TLSClientCA != "" {
		certs, err = clientcert.New(clientcert.Config{
			CAFile:   cfg.TLSClientCA,
			CRLFile:  cfg.TLSCRL,
			Identity: clientcert.Identity(cfg.TLSIdentity),
			CheckID:  func(id string) error { return ingest.ValidateDeviceID(id, cfg.Limits.MaxDeviceID) },
			Flag:     "--mqtt-tls",
		}, log)
		if err != nil {
			cancel()
			return nil, err
		}
	}
	var tickets *ticketkeys.Keys
	if cfg.TLSTicketKeys != "" {
		if tickets, err = ticketkeys.Load(cfg.TLSTicketKeys, "--mqtt-tls-ticket-keys", log); err != nil {
			cancel()
			return nil, err
		}
	}
	var a *authenticator
	switch {
	case cfg.Credentials != nil:
		a = newAuthenticatorFrom(cfg.Credentials)
	case cfg.AuthFile == AuthRegistry:
		cancel()
		return nil, errors.New("--mqtt-auth postgres: the device registry was not set up (Config.Credentials)")
	case cfg.AuthFile != "":
		if a, err = newAuthenticator(cfg.AuthFile, log); err != nil {
			cancel()
			return nil, fmt.Errorf("load --mqtt-auth: %w", err)
		}
	}
	if a != nil || certs != nil {
		ah.acl = &acl{auth: a, certs: certs, topic: read.Template(), rules: cfg.Rules, spb: cfg.Sparkplug, limits: cfg.Limits}
		ih.acl = ah.acl
	}
	if a != nil {
		ah.fails = newLoginThrottle(cfg.AuthFailBurst, cfg.AuthFailInterval, cfg.AuthFailAddresses)
		ah.slots = newCheckSlots()
	}
	bh.ret = newRetained(cfg.MaxRetained, cfg.MaxRetainedBytes)
	ih.ret = bh.ret
	ih.wills = make(chan will, 1024)
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClients = int64(cfg.MaxClients)
	caps.MaximumPacketSize = uint32(cfg.MaxPacket)
	caps.ReceiveMaximum = uint16(cfg.ReceiveMax)
	caps.MaximumSessionExpiryInterval = uint32(min(cfg.SessionExpiry/time.Second, math.MaxUint32))
	caps.MaximumInflight = uint16(cfg.MaxInflight)
	caps.MaximumClientWritesPending = int32(cfg.MaxWritesPending)
	// An acknowledgement does not echo the publish's properties: mochi
	// would copy a user property (msg_id) into the PUBACK, and with
	// properties there it writes its QoS 1 code, 0x01, as the PUBACK's
	// reason, which MQTT 5 does not define (success is 0x00). A refusal
	// keeps its reason string.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	if cfg.Sparkplug {
		ih.spbLive = newSpbSessions()
		ih.rebirths = make(chan [2]string, 64)
	}
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		// The inline client publishes Sparkplug Rebirth requests.
		InlineClient: cfg.Sparkplug,
		// mochi logs per connection and per refused publish (at error
		// level, with the whole packet): silent unless firehose runs at
		// debug level. What matters reaches us as errors and metrics.
		Logger: slog.New(minLevel{h: log.Handler(), min: mochiLevel(log)}).With("component", "mochi"),
		// No packet is shorter than 1 byte, so mochi writes each one as
		// it comes instead of buffering writes while a client's queue is
		// not empty: the flow hook makes a write loop wait for the client's
		// acknowledgements, which must not be of messages still sitting in
		// that buffer (see flowHook).
		ClientNetWriteBufferSize: 1,
	})
	ah.srv, ih.srv = srv, srv
	m := newMetrics(reg, gauges{
		// mochi updates the count atomically; a plain read races with connects.
		clients:         func() float64 { return float64(atomic.LoadInt64(&srv.Info.ClientsConnected)) },
		offlineSessions: func() float64 { return float64(bh.sess.count()) },
		offlineQueued:   func() float64 { return float64(bh.sess.queued.Load()) },
		throttled: func() float64 {
			if ah.fails == nil {
				return 0
			}
			return float64(ah.fails.tracked())
		},
		bcrypts: func() float64 {
			if ah.acl == nil || ah.acl.auth == nil {
				return 0
			}
			return float64(ah.acl.auth.bcrypts.Load())
		},
		retained:      func() float64 { n, _ := bh.ret.stats(); return float64(n) },
		retainedBytes: func() float64 { _, b := bh.ret.stats(); return float64(b) },
		// A subscriber that falls behind by more than its session holds
		// misses messages; mochi only counts them.
		dropSessionFull:    func() float64 { return float64(atomic.LoadInt64(&srv.Info.InflightDropped)) },
		dropWriteQueueFull: func() float64 { return float64(atomic.LoadInt64(&srv.Info.MessagesDropped)) },
	})
	ah.m, ih.m, bh.m = m, m, m
	bh.sess = newSessions(srv, cfg.MaxOfflineSessions, cfg.MaxInflight, int64(cfg.MaxOfflineMessages), m)
	ah.queue = bh.sess
	// mochi calls the hooks that provide an event in the order they were
	// added. auth comes first: its OnConnect refuses before anything else
	// sees the client, and its OnWill, refusing a will, clears the retain
	// flag the bounds hook's OnWill would otherwise account for. ingest
	// comes before bounds: on a disconnect the Sparkplug B state's expiry
	// starts before the session is recorded, as when they were one hook.
	// OnACLCheck, OnConnectAuthenticate (auth) and OnPublish (ingest) each
	// have a single provider. flow comes last: it only counts what the
	// others let through.
	fh := newFlowHook(cfg.MaxInflight)
	for _, hk := range []mqtt.Hook{ah, ih, bh, fh} {
		if err := srv.AddHook(hk, nil); err != nil {
			cancel()
			return nil, fmt.Errorf("add broker hook: %w", err)
		}
	}
	return &Broker{cfg: cfg, srv: srv, auth: ah, ingest: ih, bounds: bh, flow: fh, tickets: tickets, log: log, stop: cancel, lns: map[string]net.Listener{}}, nil
}

// Listen binds every configured listener. A port in use is an error naming
// the address and the flag to change.
func (b *Broker) Listen() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.lns) > 0 {
		return errors.New("broker: already listening")
	}
	bind := func(id, addr, flag string, tc *tls.Config) error {
		if addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("listen on %s: %w: choose another with %s, or set it empty to turn this listener off", addr, syscall.EADDRINUSE, flag)
			}
			return fmt.Errorf("listen on %s (%s): %w", addr, flag, err)
		}
		if tc != nil {
			ln = newHandshakeListener(ln, tc, maxHandshakes, handshakeTimeout, b.auth.m.handshakes, b.log)
		}
		b.lns[id] = ln
		return nil
	}
	var tc *tls.Config
	if b.cfg.TLSAddr != "" {
		cert, err := tls.LoadX509KeyPair(b.cfg.TLSCert, b.cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("load MQTT TLS certificate (--mqtt-tls-cert %s, --mqtt-tls-key %s): %w", b.cfg.TLSCert, b.cfg.TLSKey, err)
		}
		tc = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		if c := b.certs(); c != nil {
			c.Apply(tc)
		}
		if b.tickets != nil {
			b.tickets.Apply(tc)
		}
	}
	err := errors.Join(
		bind("tcp", b.cfg.Addr, "--mqtt-addr", nil),
		bind(tlsListener, b.cfg.TLSAddr, "--mqtt-tls-addr", tc),
		bind("ws", b.cfg.WSAddr, "--mqtt-ws-addr", nil),
	)
	if err == nil {
		for id, ln := range b.lns {
			var l listeners.Listener = listeners.NewNet(id, ln)
			if id == "ws" {
				l = newWSListener(id, ln)
			}
			if err = b.srv.AddListener(l); err != nil {
				err = fmt.Errorf("add %s listener: %w", id, err)
				break
			}
		}
	}
	if err != nil {
		for _, ln := range b.lns {
			ln.Close()
		}
		clear(b.lns)
		return err
	}
	return nil
}

// Addr is the bound address of a listener ("tcp", "tls" or "ws"), or nil.
func (b *Broker) Addr(id string) net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ln, ok := b.lns[id]; ok {
		return ln.Addr()
	}
	return nil
}

// Run calls Listen if needed, serves until ctx ends, then drains: it refuses
// new readings and stops accepting connections, waits (up to the shutdown
// timeout) for in-flight QoS 1/2 publishes to be stored and acknowledged, and
// disconnects the clients.
func (b *Broker) Run(ctx context.Context) error {
	b.mu.Lock()
	listening, started := len(b.lns) > 0, b.started
	b.started = true
	b.mu.Unlock()
	if started {
		return errors.New("broker: Run called twice")
	}
	if !listening {
		if err := b.Listen(); err != nil {
			return err
		}
	}
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("start mqtt server: %w", err)
	}
	for id := range b.lns {
		b.log.Info("mqtt listening", "listener", id, "addr", b.Addr(id).String())
	}
	var wg sync.WaitGroup
	if h := b.ingest; h.spb != nil {
		wg.Go(func() { h.sendRebirths(ctx) })
		wg.Go(func() { h.sweepSparkplug(ctx) })
	}
	wg.Go(func() { b.ingest.storeWills(ctx) })
	if c := b.certs(); c != nil && c.HasCRL() {
		wg.Go(func() { c.Watch(ctx, crlCheckInterval, b.disconnectRevoked) })
	}
	if k := b.tickets; k != nil {
		wg.Go(func() { k.Watch(ctx, crlCheckInterval) })
	}
	if a := b.auth.acl; a != nil && a.auth != nil {
		wg.Go(func() {
			a.auth.src.Watch(ctx, func(old, cur Credentials) {
				n := b.auth.revoke(old, cur)
				b.log.Info("MQTT device credentials changed", "devices", len(cur), "disconnected", n)
			})
		})
	}
	<-ctx.Done()
	b.drain()
	wg.Wait()
	return nil
}

func (b *Broker) drain() {
	h := b.ingest
	h.draining.Store(true)
	b.mu.Lock()
	for _, ln := range b.lns {
		ln.Close() // stop accepting; mochi closes them again, harmlessly
	}
	b.mu.Unlock()
	deadline := time.Now().Add(b.cfg.ShutdownTimeout)
	for h.inflight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := h.inflight.Load(); n > 0 {
		b.log.Warn("shutdown: publishes still in flight after the shutdown timeout; their devices will resend", "publishes", n)
	}
	time.Sleep(ackGrace)
	b.stop()
	if err := b.srv.Close(); err != nil {
		b.log.Warn("close mqtt server", "err", err)
	}
}

// minLevel drops records below min: mochi's own logging is per connection.
type minLevel struct {
	h   slog.Handler
	min slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.h.Enabled(ctx, l)
}
func (m minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }
func (m minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h: m.h.WithAttrs(a), min: m.min}
}
func (m minLevel) WithGroup(n string) slog.Handler { return minLevel{h: m.h.WithGroup(n), min: m.min} }

func mochiLevel(log *slog.Logger) slog.Level {
	if log.Enabled(context.Background(), slog.LevelDebug) {
		return slog.LevelDebug
	}
	return slog.LevelError + 4
}
