package subscriber

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"firehose/ingest"
	"firehose/sparkplug"
	"firehose/stream"
)

// refusedError is the broker's refusal of the connection or of a
// subscription: at start it stops serve, with the broker's answer.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// session is one network connection to the broker and the messages it
// received.
type session struct {
	s       *Subscriber
	conn    net.Conn
	r       *bufio.Reader
	v       byte // protocol version: 4 (3.1.1) or 5
	present bool // the broker had the session

	wmu sync.Mutex // guards w
	w   *bufio.Writer

	// acks holds, in arrival order, the acknowledgement owed for each QoS
	// 1/2 PUBLISH and each PUBREL; the acker writes each once it is
	// settled. held bounds the messages received and not yet acknowledged.
	acks chan *owed
	held chan struct{}
	// pend holds the decoded messages for the batcher, in arrival order.
	pend chan pending

	epochs map[uint16]uint64 // QoS 2: each packet id's epoch; guarded by emu
	emu    sync.Mutex

	// early is the first packet the broker sent before the SUBACK, and
	// subackDue the broker whose SUBACK the read loop checks then (see
	// startBeforeSuback); both are the read loop's once it runs.
	early     *packets.Packet
	subackDue string

	stores sync.WaitGroup
	// failed is closed, and ctx cancelled, by fail: the session ends.
	failed chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
	err    error // why it failed, set before failed is closed
}

// owed is an acknowledgement the session owes the broker.
type owed struct {
	kind     byte // packets.Puback, Pubrec or Pubcomp
	pid      uint16
	received time.Time
	settled  chan struct{}
	err      error // set before settled is closed: the ack must not be sent
	outcome  outcome
	hold     bool // it holds a place in held
}

// fail ends the session for err (the first reason wins).
func (ss *session) fail(err error) {
	ss.once.Do(func() {
		ss.err = err
		close(ss.failed)
		ss.cancel()
		_ = ss.conn.Close()
	})
}

// connect dials the broker and opens the session with CONNECT and
// SUBSCRIBE, in protocol version v.
func (s *Subscriber) connect(ctx context.Context, broker string, v byte) (*session, error) {
	conn, err := s.cfg.dial(ctx, broker)
	if err != nil {
		return nil, err
	}
	ss := &session{s: s, conn: conn, r: bufio.NewReaderSize(conn, 64<<10), w: bufio.NewWriterSize(conn, 16<<10), v: v,
		acks: make(chan *owed, 2*s.cfg.ReceiveMaximum+16), held: make(chan struct{}, s.cfg.ReceiveMaximum),
		pend: make(chan pending, s.cfg.ReceiveMaximum), failed: make(chan struct{})}
	ss.ctx, ss.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			ss.cancel()
			conn.Close()
		}
	}()
	_ = conn.SetDeadline(time.Now().Add(s.cfg.ConnectTimeout))
	c := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: v}
	c.Connect.ProtocolName = []byte("MQTT")
	c.Connect.ClientIdentifier = s.cfg.ClientID
	c.Connect.Keepalive = uint16(s.cfg.KeepAlive / time.Second)
	if s.cfg.Username != "" {
		c.Connect.UsernameFlag, c.Connect.Username = true, []byte(s.cfg.Username)
	}
	if s.cfg.Password != "" {
		c.Connect.PasswordFlag, c.Connect.Password = true, []byte(s.cfg.Password)
	}
	if v == 5 {
		c.Properties.SessionExpiryInterval = uint32(s.cfg.SessionExpiry / time.Second)
		c.Properties.SessionExpiryIntervalFlag = true
		c.Properties.ReceiveMaximum = uint16(s.cfg.ReceiveMaximum)
	}
	if err := ss.write(c, true); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", broker, err)
	}
	ack, err := readPacket(ss.r, v)
	if err != nil {
		err = fmt.Errorf("connect to %s: no CONNACK: %w", broker, err)
		if v == 5 && (errors.Is(err, io.EOF) || errors.Is(err, packets.ErrMalformedProperties)) {
			// A broker without MQTT 5 may hang up, or answer in 3.1.1.
			return nil, &protocolError{refusedError{err.Error()}}
		}
		return nil, err
	}
	if ack.FixedHeader.Type != packets.Connack {
		return nil, fmt.Errorf("connect to %s: the broker answered %s, not CONNACK", broker, packets.PacketNames[ack.FixedHeader.Type])
	}
	if ack.ReasonCode != 0 && protocolRefused(v, ack) {
		return nil, &protocolError{refusedError{fmt.Sprintf("broker %s refused MQTT version %s", broker, protocolName(v))}}
	}
	if ack.ReasonCode != 0 {
		return nil, &refusedError{fmt.Sprintf("broker %s refused the connection of client %q: %s", broker, s.cfg.ClientID, connackReason(v, ack))}
	}
	ss.present = ack.SessionPresent
	if err := ss.subscribe(broker); err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	ok = true
	return ss, nil
}

// connackReason says why a CONNACK refused.
func connackReason(v byte, ack packets.Packet) string {
	if v == 5 {
		msg := reasonName(ack.ReasonCode)
		if ack.Properties.ReasonString != "" {
			msg += " (" + ack.Properties.ReasonString + ")"
		}
		return msg
	}
	switch ack.ReasonCode {
	case 1:
		return "unacceptable protocol version"
	case 2:
		return "identifier rejected"
	case 3:
		return "server unavailable"
	case 4:
		return "bad user name or password"
	case 5:
		return "not authorized"
	}
	return fmt.Sprintf("return code %d", ack.ReasonCode)
}

// reasonNames are the MQTT 5 reason codes a broker refuses a connection or
// a subscription with.
var reasonNames = map[byte]string{
	0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error", 0x83: "implementation specific error",
	0x84: "unsupported protocol version", 0x85: "client identifier not valid", 0x86: "bad user name or password",
	0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned",
	0x8C: "bad authentication method", 0x8F: "topic filter invalid", 0x91: "packet identifier in use",
	0x95: "packet too large", 0x97: "quota exceeded", 0x99: "payload format invalid", 0x9A: "retain not supported",
	0x9B: "QoS not supported", 0x9C: "use another server", 0x9D: "server moved",
	0x9E: "shared subscriptions not supported", 0x9F: "connection rate exceeded",
	0xA1: "subscription identifiers not supported", 0xA2: "wildcard subscriptions not supported",
}

// reasonName is code's name and number, e.g. "not authorized (0x87)".
func reasonName(code byte) string {
	if n, ok := reasonNames[code]; ok {
		return fmt.Sprintf("%s (0x%02x)", n, code)
	}
	return fmt.Sprintf("reason code 0x%02x", code)
}

// protocolRefused says whether a refusal means the broker does not speak
// MQTT 5 (and 3.1.1 should be tried).
func protocolRefused(v byte, ack packets.Packet) bool {
	return (v == 5 && ack.ReasonCode == packets.ErrUnsupportedProtocolVersion.Code) || ack.ReasonCode == 1
}

// subscribe subscribes to every filter and checks that the broker granted
// each. A subscription refused stops the session with the broker's answer.
// MQTT 5 asks for no retained messages; retained messages a 3.1.1 broker
// sends for a new subscription carry the retain flag, which the read loop
// acknowledges without storing (they are not live readings).
func (ss *session) subscribe(broker string) error {
	filters := ss.s.cfg.filters()
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: ss.v, PacketID: 1}
	for _, f := range filters {
		sub.Filters = append(sub.Filters, packets.Subscription{Filter: f, Qos: ss.s.cfg.QoS, RetainHandling: 2})
	}
	if err := ss.write(sub, true); err != nil {
		return fmt.Errorf("subscribe at %s: %w", broker, err)
	}
	for {
		pk, err := readPacket(ss.r, ss.v)
		if err != nil {
			return fmt.Errorf("subscribe at %s: no SUBACK: %w", broker, err)
		}
		if pk.FixedHeader.Type != packets.Suback {
			// A resumed session may deliver before the SUBACK.
			if pk.FixedHeader.Type == packets.Publish || pk.FixedHeader.Type == packets.Pubrel {
				ss.startBeforeSuback(pk, broker)
				return nil
			}
			continue
		}
		return ss.checkSuback(pk, filters, broker)
	}
}

// startBeforeSuback handles a broker that resumed the session and sends
// messages before the SUBACK: the session starts with pk, the first of
// them, and the read loop handles the rest as any other, with the bound on
// messages held, and checks the SUBACK when it comes. Mosquitto resends every
// message in flight for the session before it reads the SUBSCRIBE: up to a
// packet id space of them (65,535) with a 3.1.1 session, or when it sent past
// Receive Maximum before (it may: see the Redis-stall fault scenario). Read
// here, before the session runs, they would all wait in memory; the limit
// this had on them made every reconnection fail for as long as the broker
// held more in flight.
func (ss *session) startBeforeSuback(pk packets.Packet, broker string) {
	ss.early = &pk
	ss.subackDue = broker
}

func (ss *session) checkSuback(pk packets.Packet, filters []string, broker string) error {
	if len(pk.ReasonCodes) != len(filters) {
		return fmt.Errorf("subscribe at %s: SUBACK with %d answers for %d filters", broker, len(pk.ReasonCodes), len(filters))
	}
	for i, code := range pk.ReasonCodes {
		if code >= 0x80 {
			return &refusedError{fmt.Sprintf("broker %s refused the subscription to %q: %s", broker, filters[i], reasonName(code))}
		}
		if code < ss.s.cfg.QoS {
			ss.s.log.Warn("broker granted a lower QoS than asked", "filter", filters[i], "granted", code, "asked", ss.s.cfg.QoS)
		}
	}
	return nil
}

// write encodes pk into the session's writer, and flushes if asked.
func (ss *session) write(pk packets.Packet, flush bool) error {
	var buf bytes.Buffer
	if err := encode(&buf, pk); err != nil {
		return err
	}
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	if _, err := ss.w.Write(buf.Bytes()); err != nil {
		return err
	}
	if flush {
		return ss.w.Flush()
	}
	return nil
}

// writeAck writes a PUBACK, PUBREC or PUBCOMP of packet id pid, and
// flushes if asked. It is the same 4 bytes in MQTT 3.1.1 and 5 (in 5, a
// success without properties leaves out its reason code).
func (ss *session) writeAck(kind byte, pid uint16, flush bool) error {
	b := [4]byte{kind << 4, 2, byte(pid >> 8), byte(pid)}
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	if _, err := ss.w.Write(b[:]); err != nil {
		return err
	}
	if flush {
		return ss.w.Flush()
	}
	return nil
}

func (ss *session) flush() error {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	return ss.w.Flush()
}

// run serves the session until the connection ends, ctx ends (then it
// stops reading, waits for the messages being stored, acknowledges them
// and disconnects), or a message cannot be stored within the retry
// timeout. It returns why it ended.
func (ss *session) run(ctx context.Context) error {
	s := ss.s
	if s.cfg.QoS == 2 {
		ectx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
		epochs, err := s.epochs.Start(ectx, ss.present)
		cancel()
		if err != nil {
			ss.fail(fmt.Errorf("read the session's packet id epochs: %w", err))
			return ss.err
		}
		ss.epochs = epochs
	}
	var aux sync.WaitGroup
	acked := make(chan struct{})
	aux.Go(func() { ss.acker(); close(acked) })
	aux.Go(func() { ss.pinger() })
	if rb, ok := s.dec.(Rebirther); ok {
		aux.Go(func() { ss.rebirther(rb.Rebirths()) })
	}
	ss.stores.Go(ss.batcher)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		ss.readLoop()
	}()
	select {
	case <-ctx.Done():
		// Stop reading: what is in flight is stored and acknowledged,
		// nothing new is taken (the broker keeps it for the session).
		ss.s.stopping.Store(true)
		_ = ss.conn.SetReadDeadline(time.Now())
	case <-ss.failed:
	}
	<-readDone
	close(ss.pend)
	ss.waitStores()
	close(ss.acks)
	<-acked
	if ctx.Err() != nil && ss.err == nil {
		d := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: ss.v}
		_ = ss.write(d, true)
		ss.fail(errors.New("shutting down"))
	}
	ss.fail(errors.New("connection closed"))
	aux.Wait()
	return ss.err
}

// waitStores waits for the messages being stored; at shutdown for at most
// the shutdown timeout, after which the session fails: what was not stored
// stays unacknowledged, and the broker resends it to the next session.
func (ss *session) waitStores() {
	done := make(chan struct{})
	go func() {
		ss.stores.Wait()
		close(done)
	}()
	if !ss.s.stopping.Load() {
		<-done
		return
	}
	t := time.NewTimer(ss.s.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		ss.fail(errors.New("shutdown timeout: messages still being stored stay unacknowledged"))
		<-done
	}
}

// readLoop reads packets until the connection fails or its read deadline
// passes (ctx ended), handing each PUBLISH and PUBREL on.
func (ss *session) readLoop() {
	if ss.early != nil && !ss.handle(*ss.early) {
		return
	}
	ss.early = nil
	limit := ss.s.cfg.KeepAlive * 2
	var set time.Time // when the read deadline was last moved
	for {
		// The deadline moves at most every second: setting it costs more
		// than reading a buffered message.
		if now := time.Now(); now.Sub(set) >= time.Second {
			_ = ss.conn.SetReadDeadline(now.Add(limit))
			set = now
			if ss.s.stopping.Load() {
				// run may have set its deadline (now) before this one.
				_ = ss.conn.SetReadDeadline(now)
			}
		}
		pk, err := readPacket(ss.r, ss.v)
		if err != nil {
			select {
			case <-ss.failed:
			default:
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && ss.s.stopping.Load() {
					return // shutting down: run stops the session
				}
				ss.fail(fmt.Errorf("read from the broker: %w", err))
			}
			return
		}
		if !ss.handle(pk) {
			return
		}
	}
}

// handle takes one packet from the broker; false ends the read loop.
func (ss *session) handle(pk packets.Packet) bool {
	s := ss.s
	switch pk.FixedHeader.Type {
	case packets.Publish:
		if !ss.publish(pk) {
			return false
		}
	case packets.Pubrel:
		o := &owed{kind: packets.Pubcomp, pid: pk.PacketID, received: time.Now(), settled: make(chan struct{})}
		if !ss.queue(o) {
			return false
		}
		if ss.epochs == nil { // no QoS 2 subscription: nothing to release
			close(o.settled)
			return true
		}
		ss.stores.Go(func() { ss.release(o) })
	case packets.Disconnect:
		msg := "the broker disconnected"
		if ss.v == 5 {
			msg += fmt.Sprintf(": reason code 0x%02x %s", pk.ReasonCode, pk.Properties.ReasonString)
		}
		ss.fail(errors.New(msg))
		return false
	case packets.Suback:
		if ss.subackDue != "" {
			if err := ss.checkSuback(pk, s.cfg.filters(), ss.subackDue); err != nil {
				ss.fail(err)
				return false
			}
			ss.subackDue = ""
		}
	case packets.Pingresp, packets.Puback, packets.Pubrec, packets.Pubcomp:
	default:
		s.log.Debug("mqtt packet from the broker ignored", "type", packets.PacketNames[pk.FixedHeader.Type])
	}
	return true
}

// queue puts o in line for the acker, holding a place in held for a
// message; false when the session ended meanwhile.
func (ss *session) queue(o *owed) bool {
	// The end of the session first: the read loop may still find packets
	// in its buffer, and the acker frees places in held as it drains; a
	// message taken then would be stored and never acknowledged (at QoS 1
	// stored again when the broker resends it).
	select {
	case <-ss.failed:
		return false
	default:
	}
	if o.hold {
		select {
		case ss.held <- struct{}{}:
			ss.s.inFlight.Add(1)
		case <-ss.failed:
			return false
		}
	}
	ss.acks <- o // never blocks: acks has room for every held message and PUBREL
	return true
}

// publish handles one PUBLISH: QoS 0 is queued for the producer (at most
// once); QoS 1 and 2 are decoded here, in arrival order, stored in batches
// by the batcher and acknowledged, in arrival order, by the acker. False when the session
// ended: the read loop stops.
func (ss *session) publish(pk packets.Packet) bool {
	s := ss.s
	now := time.Now()
	qos := pk.FixedHeader.Qos
	s.m.byQoS[qos&3].Inc()
	s.received.Add(1)
	if pk.FixedHeader.Dup {
		s.m.dup.Inc()
		s.dups.Add(1)
	}
	m := Message{Topic: pk.TopicName, Payload: pk.Payload, MessageID: messageID(pk), QoS: qos, ReceivedAt: now}
	if qos == 0 {
		if !pk.FixedHeader.Retain {
			s.storeQoS0(m)
		}
		return true
	}
	o := &owed{kind: packets.Puback, pid: pk.PacketID, received: now, settled: make(chan struct{}), hold: true}
	var once *stream.Once
	if qos == 2 {
		o.kind = packets.Pubrec
	}
	if qos == 2 && ss.epochs != nil {
		ss.emu.Lock()
		once = &stream.Once{Session: s.cfg.ClientID, PacketID: pk.PacketID, Epoch: ss.epochs[pk.PacketID]}
		ss.emu.Unlock()
	}
	if qos == 1 && pk.FixedHeader.Dup {
		// Resent: if an earlier session of this process stored it in
		// doubt and never acknowledged it, its once key says so.
		once = s.doubts.get(pk.PacketID)
	}
	if !ss.queue(o) {
		return false
	}
	if pk.FixedHeader.Retain {
		// Sent for a new subscription, not live: stored when it was
		// published, or never (published before the subscription).
		o.outcome = retained
		close(o.settled)
		return true
	}
	it, err := s.decode(ss.ctx, m)
	if err != nil {
		// Unacknowledged: the broker resends it to the next session.
		o.err = err
		close(o.settled)
		return true
	}
	ss.pend <- pending{o: o, topic: m.Topic, it: it, qos: qos, once: once} // never blocks: held bounds it
	return true
}

// release moves a QoS 2 packet id to its next epoch (PUBREL), before its
// PUBCOMP: a message the broker sends next with that id is new.
func (ss *session) release(o *owed) {
	defer close(o.settled)
	s := ss.s
	o.err = s.retry(ss.ctx, fmt.Sprintf("packet id %d not released", o.pid), func(error) string { return "release" }, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ConnectTimeout)
		defer cancel()
		e, err := s.epochs.Release(ctx, o.pid)
		if err == nil {
			ss.emu.Lock()
			ss.epochs[o.pid] = e
			ss.emu.Unlock()
		}
		return err
	})
}

// acker writes the acknowledgements in arrival order, each once its message
// is settled, flushing when none is ready or none is queued. A message that
// could not be stored ends the session: the acknowledgements after it must
// not overtake it, and the broker resends it when the session resumes.
func (ss *session) acker() {
	s := ss.s
	for o := range ss.acks {
		select {
		case <-o.settled:
		default:
			if err := ss.flush(); err != nil {
				ss.fail(fmt.Errorf("write to the broker: %w", err))
			}
			<-o.settled
		}
		if o.hold {
			<-ss.held
			s.inFlight.Add(-1)
		}
		if o.err != nil {
			// The acknowledgements written before it go out first: their
			// messages are stored, and the broker would resend them.
			_ = ss.flush()
			ss.fail(o.err)
		}
		select {
		case <-ss.failed:
			s.m.acked.WithLabelValues("not_stored").Inc()
			continue // drain: nothing more is acknowledged on this connection
		default:
		}
		// Flushed at once when no other acknowledgement waits: else it
		// would sit in the buffer until the next message or ping.
		if err := ss.writeAck(o.kind, o.pid, len(ss.acks) == 0); err != nil {
			ss.fail(fmt.Errorf("write to the broker: %w", err))
			continue
		}
		if o.kind == packets.Puback {
			s.doubts.clear(o.pid) // acknowledged: the broker may reuse the packet id
		}
		if o.kind != packets.Pubcomp {
			if o.outcome == redelivered {
				s.recognised.Add(1)
			}
			s.m.byOutcome[o.outcome].Inc()
			s.m.ack.Observe(time.Since(o.received).Seconds())
		}
	}
	if err := ss.flush(); err != nil {
		ss.fail(fmt.Errorf("write to the broker: %w", err))
	}
}

// pinger sends PINGREQ every half keep alive until the session ends.
func (ss *session) pinger() {
	t := time.NewTicker(ss.s.cfg.KeepAlive / 2)
	defer t.Stop()
	ping := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}, ProtocolVersion: ss.v}
	for {
		select {
		case <-ss.failed:
			return
		case <-t.C:
			if err := ss.write(ping, true); err != nil {
				ss.fail(fmt.Errorf("write to the broker: %w", err))
				return
			}
		}
	}
}

// rebirther publishes the Sparkplug B Rebirth requests the decoder asks
// for (QoS 0: the broker does not answer, and a lost one is asked again by
// the edge node's next unresolvable message) until the session ends. The
// broker must let the subscriber publish to spBv1.0/+/NCMD/+ (docs/subscribe.md).
func (ss *session) rebirther(reqs <-chan RebirthRequest) {
	for {
		select {
		case <-ss.failed:
			return
		case r := <-reqs:
			topic, payload, err := sparkplug.RebirthRequest(r.Group, r.EdgeNode, time.Now())
			if err != nil {
				ss.s.log.Warn("sparkplug rebirth request not sent", "group", r.Group, "edge_node", r.EdgeNode, "err", err)
				continue
			}
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: payload, ProtocolVersion: ss.v}
			if err := ss.write(pk, true); err != nil {
				ss.fail(fmt.Errorf("write to the broker: %w", err))
				return
			}
			ss.s.m.rebirths.Inc()
		}
	}
}

// messageID is the MQTT 5 user property msg_id of pk, or "".
func messageID(pk packets.Packet) string {
	for _, p := range pk.Properties.User {
		if p.Key == "msg_id" {
			return p.Val
		}
	}
	return ""
}

// storeQoS0 queues a QoS 0 message's readings without waiting: at most
// once, as the broker does. A message that is not readings is dropped.
func (s *Subscriber) storeQoS0(m Message) {
	rs, err := s.dec.Decode(s.storeCtx, m)
	if err != nil {
		s.m.qos0Dropped.WithLabelValues("invalid").Inc()
		return
	}
	for i := range rs {
		if err := s.p.Enqueue(rs[i]); err != nil {
			s.m.qos0Dropped.WithLabelValues(ingest.RefusalReason(err)).Add(float64(len(rs) - i))
			return
		}
	}
}

var (
	qosLabel     = [4]string{"0", "1", "2", "3"}
	outcomeLabel = map[outcome]string{stored: "stored", deadLetter: "dead_letter", redelivered: "redelivered", retained: "retained"}
)
