package simulator

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"firehose/internal/backoff"
	"firehose/internal/pahostore"
)

// mqttDevice is a device's connection to the broker.
type mqttDevice struct {
	client mqtt.Client
	topic  string
	timer  *time.Timer // reused for every publish's timeout
}

// mqttPasswords is who logs in with what: per device, else the default.
type mqttPasswords struct {
	byDevice map[string]string
	fallback string
}

func (p mqttPasswords) of(device string) string {
	if pw, ok := p.byDevice[device]; ok {
		return pw
	}
	return p.fallback
}

// loadPasswords reads "device password" lines ('#' starts a comment); a line
// for device "*" is the password of the devices without their own.
func loadPasswords(shared, file string) (mqttPasswords, error) {
	p := mqttPasswords{fallback: shared}
	if file == "" {
		return p, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return p, fmt.Errorf("--mqtt-password-file: %w", err)
	}
	defer f.Close()
	p.byDevice = map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		dev, pw, ok := strings.Cut(line, " ")
		pw = strings.TrimSpace(pw)
		if !ok || pw == "" {
			return p, fmt.Errorf("--mqtt-password-file %s line %d: want 'device password'", file, n)
		}
		if dev == "*" {
			p.fallback = pw
		} else {
			p.byDevice[dev] = pw
		}
	}
	if err := sc.Err(); err != nil {
		return p, fmt.Errorf("--mqtt-password-file %s: %w", file, err)
	}
	return p, nil
}

// connectMQTT connects every MQTT device of the fleet, ConnectParallel at a
// time, before the clock starts. Each device has its own connection, client
// id and username (its id). At QoS 1 and 2 the session is persistent
// (CleanSession false), so after a lost connection the client resends what
// was in flight; it reconnects on its own, as a device does. A device that
// cannot connect fails the run: the fleet would not be the one asked for.
func (f *fleet) connectMQTT(ctx context.Context, tlsConf *tls.Config) error {
	pws, err := loadPasswords(f.cfg.MQTTPassword, f.cfg.MQTTPasswordFile)
	if err != nil {
		return err
	}
	var (
		wg       sync.WaitGroup
		sem      = make(chan struct{}, f.cfg.ConnectParallel)
		failed   atomic.Int64
		firstErr error
		once     sync.Once
	)
	for _, d := range f.devices {
		if !d.mqtt {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			md, err := f.dialMQTT(d, pws.of(d.id), tlsConf)
			if err != nil {
				failed.Add(1)
				once.Do(func() { firstErr = err })
				return
			}
			f.mqtt[d.idx] = md
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		f.disconnectMQTT()
		return fmt.Errorf("connect MQTT devices: %w", err)
	}
	if n := failed.Load(); n > 0 {
		f.disconnectMQTT()
		return fmt.Errorf("%d of %d MQTT devices could not connect to %s; the first: %w", n, f.mqttDevices, redact(f.cfg.MQTT), firstErr)
	}
	return nil
}

// busyPatience is how long a device keeps coming back to a broker that
// answers its CONNECT "server unavailable" before the run fails.
const busyPatience = 30 * time.Second

func (f *fleet) dialMQTT(d *device, password string, tlsConf *tls.Config) (*mqttDevice, error) {
	opts := mqtt.NewClientOptions().
		AddBroker(f.cfg.MQTT).
		SetClientID(d.id).
		SetUsername(d.id).
		SetProtocolVersion(4). // MQTT 3.1.1
		SetCleanSession(f.cfg.QoS == 0).
		SetAutoReconnect(true).
		SetConnectRetry(false).
		SetConnectTimeout(f.cfg.Timeout).
		SetMaxReconnectInterval(2 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetPingTimeout(f.cfg.Timeout).
		SetWriteTimeout(f.cfg.Timeout).
		SetOrderMatters(false).
		SetStore(&resumeStore{Store: pahostore.New(), d: d}).
		SetConnectionLostHandler(func(mqtt.Client, error) { f.c.reconnects.Add(1) }).
		SetReconnectingHandler(func(mqtt.Client, *mqtt.ClientOptions) { d.epoch.Add(1) })
	if password != "" {
		opts.SetPassword(password)
	}
	topic := strings.ReplaceAll(f.cfg.MQTTTopic, "{device_id}", d.id)
	if d.edge != nil {
		f.sparkplugOptions(d, opts)
		topic = ""
	}
	tlsConf, err := f.deviceTLS(d, tlsConf)
	if err != nil {
		return nil, err
	}
	if tlsConf != nil {
		opts.SetTLSConfig(tlsConf)
		opts.SetCustomOpenConnectionFn(f.openTLS(tlsConf))
	}
	// A broker that answers "server unavailable" (3.1.1 code 3: busy,
	// throttled, its credentials not loaded yet) asks the device to come
	// back later: it does, backing off, for up to busyPatience.
	bo := backoff.New(100*time.Millisecond, 2*time.Second)
	giveUp := time.Now().Add(max(busyPatience, 3*f.cfg.Timeout))
	var cl mqtt.Client
	for {
		cl = mqtt.NewClient(opts)
		tok := cl.Connect()
		if !tok.WaitTimeout(f.cfg.Timeout + time.Second) {
			cl.Disconnect(0)
			return nil, fmt.Errorf("connect %s: no CONNACK within %s", d.id, f.cfg.Timeout)
		}
		err := tok.Error()
		if err == nil {
			break
		}
		if !errors.Is(err, packets.ErrorRefusedServerUnavailable) || time.Now().After(giveUp) {
			return nil, fmt.Errorf("connect %s: %w", d.id, err)
		}
		time.Sleep(bo.Next())
	}
	return &mqttDevice{
		client: cl,
		topic:  topic,
		timer:  stoppedTimer(),
	}, nil
}

// tlsGate bounds the TLS handshakes the simulator's devices make at once.
// A real device has a CPU of its own for its handshake; the simulator's
// thousands share its process's. Started all at once (a fleet reconnecting
// after a restart of the broker), their handshakes would share that CPU
// until each took longer than the devices' --timeout, time them out, and
// start again: a storm of the simulator's own making. Queued, each
// handshake runs at the speed a device's would, and the wait in the queue,
// a device's own CPU being busy elsewhere, is not counted against it.
var tlsGate = make(chan struct{}, 32*runtime.GOMAXPROCS(0))

// openTLS is paho's OpenConnectionFunc for ssl:// (tls://, mqtts://):
// the TCP connection and the TLS handshake with tc, within --timeout once
// the device's turn in tlsGate came.
func (f *fleet) openTLS(tc *tls.Config) mqtt.OpenConnectionFunc {
	return func(uri *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
		tlsGate <- struct{}{}
		defer func() { <-tlsGate }()
		ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Timeout)
		defer cancel()
		c, err := (&tls.Dialer{Config: tc}).DialContext(ctx, "tcp", uri.Host) // ServerName: uri's host, as paho's
		if err != nil {
			return nil, fmt.Errorf("connect to %s over TLS: %w", uri.Host, err)
		}
		if c.(*tls.Conn).ConnectionState().DidResume {
			f.c.tlsResumed.Add(1)
		} else {
			f.c.tlsFull.Add(1)
		}
		return c, nil
	}
}

// deviceTLS is the TLS configuration device d connects with over ssl://:
// the fleet's, with d's own client certificate when Config.MQTTCert is set
// and d's own session cache (one session) when Config.TLSResume is, kept
// for all its connections, so that a reconnect resumes the session as a
// device's TLS stack would. Without either, the fleet's (nil: paho's).
func (f *fleet) deviceTLS(d *device, fleetConf *tls.Config) (*tls.Config, error) {
	resume := f.cfg.TLSResume && isTLSURL(f.cfg.MQTT)
	if f.cfg.MQTTCert == "" && !resume {
		return fleetConf, nil
	}
	tc := &tls.Config{}
	if fleetConf != nil {
		tc = fleetConf.Clone()
	}
	tc.ClientSessionCache = nil
	if resume {
		tc.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	}
	if f.cfg.MQTTCert == "" {
		return tc, nil
	}
	certFile := strings.ReplaceAll(f.cfg.MQTTCert, "{device_id}", d.id)
	keyFile := strings.ReplaceAll(f.cfg.MQTTKey, "{device_id}", d.id)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("client certificate of %s: %w", d.id, err)
	}
	tc.Certificates = []tls.Certificate{cert}
	return tc, nil
}

// resumeStore is paho's memory store of in-flight packets with one change
// for a device that must tell acknowledgements from paho's bookkeeping.
//
// After a reconnect paho resends what its store holds (resume), and hands
// each resent PUBLISH a new token, completing the original one at once,
// successfully, before any PUBACK (messageIds.claimID). resume starts by
// listing the store (All): All moves the device's epoch on, so a publish
// whose token resume may complete always sees the epoch change and is not
// counted as acknowledged. (A publish stored after the listing is not
// resent by that resume, and its token completes only on its PUBACK.)
//
// Races in paho's resume are kept away by pahostore.
type resumeStore struct {
	*pahostore.Store
	d *device
}

func (s *resumeStore) All() []string {
	s.d.epoch.Add(1)
	return s.Store.All()
}

// disconnectMQTT closes every connection, in parallel: each waits up to
// 250 ms for its last packets.
func (f *fleet) disconnectMQTT() {
	var wg sync.WaitGroup
	for i, md := range f.mqtt {
		if md == nil {
			continue
		}
		f.mqtt[i] = nil
		wg.Go(func() { md.client.Disconnect(250) })
	}
	wg.Wait()
}

var errPublishTimeout = errors.New("no PUBACK/PUBCOMP in time")

// publish sends reading r of d and waits for its acknowledgement (PUBACK at
// QoS 1, PUBCOMP at QoS 2; at QoS 0 until the client wrote it). A publish
// the client refuses (not connected, its queue full) is resent, up to
// MaxAttempts. A publish without an acknowledgement within Timeout is left to
// the client, which resends it after a reconnect: the device moves on and
// the reading counts as unacknowledged and possibly resent.
//
// A publish whose connection was lost while it was in flight (the device's
// epoch moved, see resumeStore) is neither counted acknowledged nor failed:
// paho resends it from its store after reconnecting and completes the
// original token right then, without waiting for the broker's PUBACK. So
// that token's success proves nothing; the reading counts as unconfirmed and
// possibly resent (if it lands, it landed without an acknowledgement; if
// not, no promise was broken).
// Latency runs from intended.
func (f *fleet) publish(ctx context.Context, d *device, md *mqttDevice, r reading, intended time.Time) (bool, []byte) {
	extra := f.cfg.ExtraFields
	return f.publishUnits(ctx, d, md, &d.ledger, md.topic, r.seq, 1, 128+24*extra,
		func(b []byte) []byte { return appendMQTT(b, r, extra) }, intended)
}

// publishUnits publishes the message build appends (sizeHint its usual
// size), which carries the units first..first+n-1 of led, on topic, as
// publish describes. It returns whether it was acknowledged, and the
// payload (at QoS 0 the device's buffer, reused).
func (f *fleet) publishUnits(ctx context.Context, d *device, md *mqttDevice, led *ledger, topic string, first uint64, n int,
	sizeHint int, build func([]byte) []byte, intended time.Time) (bool, []byte) {
	led.mark(first, n, flagSent)
	f.c.sent.Add(int64(n))
	qos := byte(f.cfg.QoS)
	if qos == 0 {
		led.mark(first, n, flagQoS0)
		f.c.qos0.Add(int64(n))
		if !md.client.IsConnectionOpen() {
			// The client drops QoS 0 messages while reconnecting; say so.
			f.c.offline.Add(int64(n))
			return false, nil
		}
		// At QoS 0 the client is done with the payload once written: the
		// device's buffer is reused.
		d.buf = build(d.buf[:0])
	}
	payload := d.buf
	bo := backoff.New(firstBackoff, maxBackoff)
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			led.mark(first, n, flagResent)
		}
		if qos > 0 {
			// The client keeps a QoS 1/2 payload in its store until it
			// stops resending it, which we cannot see: a fresh one each
			// time.
			payload = build(make([]byte, 0, sizeHint))
		}
		epoch := d.epoch.Load()
		tok := md.client.Publish(topic, qos, false, payload)
		f.c.requests.Add(1)
		md.timer.Reset(f.cfg.Timeout)
		var err error
		select {
		case <-tok.Done():
			err = tok.Error()
		case <-md.timer.C:
			err = errPublishTimeout
		case <-ctx.Done():
			err = ctx.Err()
		}
		stopTimer(md.timer)
		reconnected := d.epoch.Load() != epoch
		if reconnected {
			led.mark(first, n, flagResent)
		}
		switch {
		case err == nil && qos == 0:
			f.lat.record(d.idx, time.Since(intended))
			return false, payload
		case err == nil && reconnected:
			f.c.unconfirmed.Add(int64(n))
			return false, payload
		case err == nil:
			led.mark(first, n, flagAcked)
			f.c.acked.Add(int64(n))
			if led.flags[first-1]&flagResent != 0 {
				f.c.ackedResent.Add(int64(n))
			}
			f.lat.record(d.idx, time.Since(intended))
			return true, payload
		}
		f.c.errors.Add(1)
		f.noteError(err)
		if qos > 0 && (errors.Is(err, errPublishTimeout) || ctx.Err() != nil) {
			// Left in flight: the client resends it after a reconnect.
			led.mark(first, n, flagResent)
			f.c.givenUp.Add(int64(n))
			return false, payload
		}
		if qos == 0 || attempt >= f.cfg.MaxAttempts || !sleep(ctx, bo.Next()) {
			f.c.givenUp.Add(int64(n))
			return false, payload
		}
	}
}

// resendMQTT publishes an acknowledged message's payload once more, as a
// device whose PUBACK was lost does (Config.Resend), and waits for its
// acknowledgement; it is counted as a resend, not as sent.
func (f *fleet) resendMQTT(ctx context.Context, md *mqttDevice, led *ledger, topic string, first uint64, n int, payload []byte) {
	led.mark(first, n, flagResentOnPurpose)
	f.c.resends.Add(1)
	f.c.resentUnits.Add(int64(n))
	if f.publishOnce(ctx, md, topic, payload) {
		f.c.resendsAcked.Add(1)
	}
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// stopTimer stops t so that it can be Reset (Go 1.23+ timers need no
// draining).
func stopTimer(t *time.Timer) { t.Stop() }
