package sparkplug

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Value is one metric value of a message, resolved against its birth
// certificate: what firehose lands as one row.
type Value struct {
	Device    string    // group/edge_node[/device]
	Name      string    // the metric's name (from the birth certificate for an alias)
	Alias     uint64    // the alias, if the metric had one
	HasAlias  bool      //
	Datatype  DataType  // the birth certificate's, or the metric's own
	Timestamp time.Time // the metric's timestamp, else the payload's; zero if neither
	// Historical and Transient copy is_historical and is_transient.
	Historical, Transient bool
	Converted
}

// MetricError is a metric left out of Message.Values: its value did not fit
// its datatype (errors.Is(Err, ErrValue)).
type MetricError struct {
	Index int    // position in the payload's metrics
	Name  string // its name, if known
	Err   error
}

func (e MetricError) Error() string {
	return fmt.Sprintf("metric %d (%q): %v", e.Index, e.Name, e.Err)
}

// RebirthReason says why a Rebirth request is due.
type RebirthReason uint8

// Reasons for a Rebirth request.
const (
	// NotBorn: a message from an edge node (or device) with no live birth
	// certificate, as a DATA before its BIRTH or after a DEATH.
	NotBorn RebirthReason = iota + 1
	// UnknownAlias: a DATA metric whose alias or name its births never gave.
	UnknownAlias
	// SeqGap: the message's seq is not the previous one plus 1 (mod 256).
	SeqGap
)

func (r RebirthReason) String() string {
	switch r {
	case NotBorn:
		return "not born"
	case UnknownAlias:
		return "unknown alias"
	case SeqGap:
		return "seq gap"
	}
	return "RebirthReason(" + strconv.Itoa(int(r)) + ")"
}

// ErrRebirthNeeded is matched (errors.Is) by every *RebirthError.
var ErrRebirthNeeded = errors.New("sparkplug rebirth needed")

// RebirthError says the edge node's state is not to be trusted and why: the
// caller sends RebirthRequest(Group, EdgeNode, now) to the edge node.
type RebirthError struct {
	Group, EdgeNode string
	Device          string // the device whose message it was, if any
	Reason          RebirthReason
	Aliases         []uint64 // UnknownAlias: the aliases not known
	Names           []string // UnknownAlias: the names not known
	Seq, Want       uint64   // SeqGap: the seq received and the one expected
	// Duplicate is set when a request for the node went out less than
	// Tracker.RebirthInterval ago: do not send another.
	Duplicate bool
}

func (e *RebirthError) Error() string {
	node := e.Group + "/" + e.EdgeNode
	if e.Device != "" {
		node += "/" + e.Device
	}
	switch e.Reason {
	case UnknownAlias:
		return fmt.Sprintf("sparkplug %s: unknown aliases %v, names %q: rebirth needed", node, e.Aliases, e.Names)
	case SeqGap:
		return fmt.Sprintf("sparkplug %s: seq %d, want %d: rebirth needed", node, e.Seq, e.Want)
	}
	return fmt.Sprintf("sparkplug %s: %s: rebirth needed", node, e.Reason)
}

// Is makes every RebirthError match ErrRebirthNeeded.
func (e *RebirthError) Is(target error) bool { return target == ErrRebirthNeeded }

// Message is what Tracker.Handle made of one message.
type Message struct {
	Topic   Topic
	Payload *Payload // nil for STATE, whose payload is not protobuf
	// Values are the metric values to land, in payload order: those of
	// BIRTH and DATA messages that resolved. DEATH, NCMD, DCMD and STATE give none.
	Values []Value
	// Invalid are the metrics whose value did not fit their datatype.
	Invalid []MetricError
	// Rebirth, when set, asks the caller to send a Rebirth request to the edge
	// node, unless Rebirth.Duplicate. Values still holds what could be
	// resolved (with SeqGap, all).
	Rebirth *RebirthError
	// Stale is set for an NDEATH whose bdSeq is not the live NBIRTH's: a
	// death certificate of an earlier session, ignored.
	Stale bool
	// Session identifies the session an NBIRTH started (for EndSession).
	Session string
}

// ErrQuota is matched (errors.Is) by the error of a birth refused because
// its owner already has Tracker.MaxNodes edge nodes with state.
var ErrQuota = errors.New("sparkplug state quota exceeded")

// ErrStateTooLarge is matched (errors.Is) by the error of a birth that
// would make an edge node's state larger than Tracker.MaxNodeBytes.
var ErrStateTooLarge = errors.New("sparkplug state too large")

// Tracker decodes Sparkplug B messages and keeps each edge node's alias and
// sequence state in a Store. Safe for concurrent use. Messages of one
// connection of an edge node must be handled in the order they arrived;
// a death (a will) of an earlier connection may come at any time, on any
// goroutine: it ends only the session whose bdSeq it carries.
type Tracker struct {
	store Store
	// MaxNodes is how many edge nodes one owner (MQTT credential) may keep
	// state for at once, live or expiring; a birth of one more is refused
	// (ErrQuota). 0: no limit.
	MaxNodes int
	// MaxNodeBytes bounds the size of one edge node's state (its births and
	// its devices' births, as fieldSize counts them); a birth past it is
	// refused (ErrStateTooLarge). 0: no limit.
	MaxNodeBytes int64
	// StateTTL is how long the state of an edge node whose session ended
	// (EndSession) is kept before it expires (default DefaultStateTTL).
	StateTTL time.Duration
	// RebirthInterval is how long after a Rebirth request for an edge node
	// the next ones are marked Duplicate (default DefaultRebirthInterval;
	// 0 marks none). Set it before the first Handle.
	RebirthInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DefaultRebirthInterval: an edge node answers a Rebirth request within a
// second or so, but every message still in flight from it would ask again;
// after this long an unanswered request (say, a lost NCMD) is repeated.
const DefaultRebirthInterval = 10 * time.Second

// DefaultStateTTL is how long an ended session's state is kept: a node that
// reconnects within it (and sends DATA before its NBIRTH) is still known.
const DefaultStateTTL = 24 * time.Hour

// NewTracker returns a Tracker keeping state in store.
func NewTracker(store Store) *Tracker {
	return &Tracker{store: store, RebirthInterval: DefaultRebirthInterval, Now: time.Now, StateTTL: DefaultStateTTL}
}

// Fields of a node's state.
const (
	fieldSeq   = "seq"   // last seq, decimal; present while the node is born
	fieldBdSeq = "bdseq" // the NBIRTH's bdSeq, decimal, if it had one
	// fieldSession is a random id of the NBIRTH's session: every later
	// write applies only while it is unchanged.
	fieldSession = "sid"
)

func aliasField(alias uint64) string       { return "a/" + strconv.FormatUint(alias, 10) }
func nameField(device, name string) string { return "n/" + device + "/" + name }
func deviceField(device string) string     { return "d/" + device }
func aliasEntry(dt DataType, device, name string) string {
	return strconv.FormatUint(uint64(dt), 10) + " " + device + "/" + name
}

// parseAliasEntry splits aliasEntry's value. A device ID has no '/', so the
// first '/' after the space ends it.
func parseAliasEntry(s string) (dt DataType, device, name string, ok bool) {
	d, rest, ok1 := strings.Cut(s, " ")
	device, name, ok2 := strings.Cut(rest, "/")
	n, err := strconv.ParseUint(d, 10, 32)
	return DataType(n), device, name, ok1 && ok2 && err == nil
}

// BdSeqMetric is the name of the birth/death sequence metric of NBIRTH and NDEATH.
const BdSeqMetric = "bdSeq"

// Handle is HandleFrom with no owner: every node counts against the same
// one.
func (t *Tracker) Handle(ctx context.Context, topic string, payload []byte) (*Message, error) {
	return t.HandleFrom(ctx, "", topic, payload)
}

// HandleFrom decodes one message published on topic by owner (the MQTT
// credential it counts against) and updates the edge node's state. An
// error means nothing is to be landed: a malformed topic or payload
// (errors.Is(err, ErrMalformed)), a birth over the limits (ErrQuota,
// ErrStateTooLarge) or a failing store. Otherwise the Message says what to
// land and whether to ask for a rebirth.
func (t *Tracker) HandleFrom(ctx context.Context, owner, topic string, payload []byte) (*Message, error) {
	tp, err := ParseTopic(topic)
	if err != nil {
		return nil, err
	}
	msg := &Message{Topic: tp}
	if tp.Type == STATE {
		return msg, nil
	}
	p, err := DecodePayload(payload)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", topic, err)
	}
	msg.Payload = p
	if tp.Type == NCMD || tp.Type == DCMD {
		return msg, nil
	}
	if tp.Type != NDEATH {
		if !p.HasSeq {
			return nil, fmt.Errorf("%s: %s without seq: %w", topic, tp.Type, ErrMalformed)
		}
		if p.Seq > 255 {
			return nil, fmt.Errorf("%s: seq %d above 255: %w", topic, p.Seq, ErrMalformed)
		}
	}
	switch tp.Type {
	case NBIRTH:
		err = t.nodeBirth(ctx, owner, msg)
	case DBIRTH:
		err = t.deviceBirth(ctx, msg)
	case NDATA, DDATA:
		err = t.data(ctx, msg)
	case DDEATH:
		err = t.deviceDeath(ctx, msg)
	case NDEATH:
		err = t.nodeDeath(ctx, msg)
	}
	if err == nil && msg.Rebirth != nil {
		err = t.throttle(ctx, msg)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", topic, err)
	}
	return msg, nil
}

// throttle marks msg.Rebirth Duplicate if a request went out for the node
// less than RebirthInterval ago, and otherwise records that one goes out now.
// The record is in the store, so every broker instance sees it, and an
// NBIRTH clears it.
func (t *Tracker) throttle(ctx context.Context, msg *Message) error {
	first, err := t.store.Throttle(ctx, msg.Topic.Node(), t.Now(), t.RebirthInterval)
	msg.Rebirth.Duplicate = err == nil && !first
	return err
}

// write applies w, and turns a refused birth into its error.
func (t *Tracker) write(ctx context.Context, node string, w Write) (Outcome, error) {
	w.MaxNodes, w.MaxBytes = t.MaxNodes, t.MaxNodeBytes
	o, err := t.store.Write(ctx, node, w)
	switch {
	case err != nil:
		return o, err
	case o == OutcomeQuota:
		return o, fmt.Errorf("owner %q has %d edge nodes with state: %w", w.Owner, t.MaxNodes, ErrQuota)
	case o == OutcomeTooLarge:
		return o, fmt.Errorf("edge node state over %d bytes: %w", t.MaxNodeBytes, ErrStateTooLarge)
	}
	return o, nil
}

// EndSession starts the expiry of node's state (StateTTL) if session, which
// an NBIRTH of node returned in Message.Session, is still its live one: the
// connection that published that NBIRTH has ended. A later NBIRTH makes the
// state live again.
func (t *Tracker) EndSession(ctx context.Context, node, session string) error {
	_, err := t.store.Expire(ctx, node, session, t.Now(), t.StateTTL)
	return err
}

// Sweep removes the expired states and returns the account of what is left.
func (t *Tracker) Sweep(ctx context.Context) (Stats, error) {
	return t.store.Sweep(ctx, t.Now())
}

// newSession returns a random session id.
func newSession() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

func (t *Tracker) rebirth(msg *Message, r RebirthReason) *RebirthError {
	if msg.Rebirth == nil {
		msg.Rebirth = &RebirthError{Group: msg.Topic.Group, EdgeNode: msg.Topic.EdgeNode, Device: msg.Topic.Device, Reason: r}
	}
	return msg.Rebirth
}

// birthFields checks a BIRTH's metric definitions and returns the state
// fields they make.
func birthFields(device string, p *Payload) (map[string]string, error) {
	set := map[string]string{}
	for i, m := range p.Metrics {
		if !m.HasName || m.Name == "" {
			return nil, fmt.Errorf("birth metric %d has no name: %w", i, ErrMalformed)
		}
		nf := nameField(device, m.Name)
		if _, dup := set[nf]; dup {
			return nil, fmt.Errorf("birth metric %d: name %q born twice: %w", i, m.Name, ErrMalformed)
		}
		set[nf] = strconv.FormatUint(uint64(m.Datatype), 10)
		if m.HasAlias {
			af := aliasField(m.Alias)
			if _, dup := set[af]; dup {
				return nil, fmt.Errorf("birth metric %d: alias %d given twice: %w", i, m.Alias, ErrMalformed)
			}
			set[af] = aliasEntry(m.Datatype, device, m.Name)
		}
	}
	return set, nil
}

// values converts the metrics of a payload whose definitions are known.
func values(msg *Message, i int, m *Metric, name string, dt DataType) {
	c, err := Convert(dt, m)
	if err != nil {
		msg.Invalid = append(msg.Invalid, MetricError{Index: i, Name: name, Err: err})
		return
	}
	v := Value{Device: msg.Topic.DeviceID(), Name: name, Alias: m.Alias, HasAlias: m.HasAlias, Datatype: dt,
		Historical: m.IsHistorical, Transient: m.IsTransient, Converted: c}
	switch {
	case m.HasTimestamp:
		v.Timestamp = time.UnixMilli(int64(m.Timestamp)).UTC()
	case msg.Payload.HasTimestamp:
		v.Timestamp = time.UnixMilli(int64(msg.Payload.Timestamp)).UTC()
	}
	msg.Values = append(msg.Values, v)
}

func (t *Tracker) nodeBirth(ctx context.Context, owner string, msg *Message) error {
	p := msg.Payload
	set, err := birthFields("", p)
	if err != nil {
		return err
	}
	// NBIRTH starts a session: whatever was known of the node and its
	// devices goes, and seq restarts at the NBIRTH's (0 per Sparkplug 3.0).
	set[fieldSeq] = strconv.FormatUint(p.Seq, 10)
	for i := range p.Metrics {
		m := &p.Metrics[i]
		if m.Name == BdSeqMetric && (m.Kind == KindInt || m.Kind == KindLong) {
			set[fieldBdSeq] = strconv.FormatUint(m.Uint, 10)
		}
		values(msg, i, m, m.Name, m.Datatype)
	}
	sid := newSession()
	set[fieldSession] = sid
	if _, err := t.write(ctx, msg.Topic.Node(), Write{Birth: true, Owner: owner, Set: set}); err != nil {
		return err
	}
	msg.Session = sid
	return nil
}

// same is the condition of a write after a read: the session read is
// still the live one.
func same(got map[string]string) map[string]string {
	return map[string]string{fieldSession: got[fieldSession]}
}

// checkSeq compares seq to the one after the stored last.
func (t *Tracker) checkSeq(msg *Message, last string) {
	prev, err := strconv.ParseUint(last, 10, 64)
	if err != nil {
		t.rebirth(msg, NotBorn)
		return
	}
	want := (prev + 1) % 256
	if msg.Payload.Seq != want {
		rb := t.rebirth(msg, SeqGap)
		rb.Seq, rb.Want = msg.Payload.Seq, want
	}
}

// deviceDefs is the list of fields a DBIRTH created, kept at d/{device} so
// the next DBIRTH or DDEATH of the device removes them.
func deviceDefs(s string) []string {
	var fields []string
	if s == "" || json.Unmarshal([]byte(s), &fields) != nil {
		return nil
	}
	return fields
}

func (t *Tracker) deviceBirth(ctx context.Context, msg *Message) error {
	p, node, dev := msg.Payload, msg.Topic.Node(), msg.Topic.Device
	got, old, born, err := t.deviceState(ctx, msg)
	if err != nil {
		return err
	}
	if !born {
		// A DBIRTH needs its node's NBIRTH: without it the device's aliases
		// would be lost at the NBIRTH anyway.
		t.rebirth(msg, NotBorn)
		return nil
	}
	set, err := birthFields(dev, p)
	if err != nil {
		return err
	}
	for i := range p.Metrics {
		values(msg, i, &p.Metrics[i], p.Metrics[i].Name, p.Metrics[i].Datatype)
	}
	defs := make([]string, 0, len(set))
	for f := range set {
		defs = append(defs, f)
	}
	slices.Sort(defs)
	list, err := json.Marshal(defs)
	if err != nil {
		return fmt.Errorf("encode device fields: %w", err)
	}
	set[deviceField(dev)] = string(list)
	set[fieldSeq] = strconv.FormatUint(p.Seq, 10)
	o, err := t.write(ctx, node, Write{If: same(got), Set: set, Del: old})
	if err == nil && o == OutcomeStale {
		// The node's session ended or restarted since the read: this
		// DBIRTH belongs to no live session.
		msg.Values = nil
		t.rebirth(msg, NotBorn)
	}
	return err
}

// deviceState reads whether the node is born, checking the message's seq
// if so, and the fields the device's last DBIRTH made.
func (t *Tracker) deviceState(ctx context.Context, msg *Message) (got map[string]string, defs []string, born bool, err error) {
	dev := msg.Topic.Device
	got, err = t.store.Get(ctx, msg.Topic.Node(), []string{fieldSeq, fieldSession, deviceField(dev)})
	if err != nil {
		return nil, nil, false, err
	}
	last, born := got[fieldSeq]
	if born {
		t.checkSeq(msg, last)
	}
	return got, deviceDefs(got[deviceField(dev)]), born, nil
}

func (t *Tracker) data(ctx context.Context, msg *Message) error {
	p, node, dev := msg.Payload, msg.Topic.Node(), msg.Topic.Device
	got, err := t.store.Get(ctx, node, dataFields(msg))
	if err != nil {
		return err
	}
	last, born := got[fieldSeq]
	if !born {
		// DATA before its BIRTH (or after a DEATH): nothing is known of
		// its aliases or datatypes, and guessing is not an option.
		t.rebirth(msg, NotBorn)
		return nil
	}
	seq := map[string]string{fieldSeq: strconv.FormatUint(p.Seq, 10)}
	if _, devBorn := got[deviceField(dev)]; dev != "" && !devBorn {
		// The node is born, its device is not: the message still counts
		// in the node's sequence.
		t.rebirth(msg, NotBorn)
		t.checkSeq(msg, last)
		_, err := t.write(ctx, node, Write{If: same(got), Set: seq})
		return err
	}
	t.checkSeq(msg, last)
	t.resolveMetrics(msg, got)
	// A session that ended or restarted since the read keeps its seq: the
	// values resolved against the state as it was when the message came.
	_, err = t.write(ctx, node, Write{If: same(got), Set: seq})
	return err
}

func (t *Tracker) deviceDeath(ctx context.Context, msg *Message) error {
	node, dev := msg.Topic.Node(), msg.Topic.Device
	got, defs, born, err := t.deviceState(ctx, msg)
	if err != nil || !born {
		return err // not born: nothing to forget
	}
	del := append(defs, deviceField(dev))
	_, err = t.write(ctx, node, Write{If: same(got), Set: map[string]string{fieldSeq: strconv.FormatUint(msg.Payload.Seq, 10)}, Del: del})
	return err
}

func (t *Tracker) nodeDeath(ctx context.Context, msg *Message) error {
	node := msg.Topic.Node()
	got, err := t.store.Get(ctx, node, []string{fieldSeq, fieldBdSeq, fieldSession})
	if err != nil {
		return err
	}
	if _, born := got[fieldSeq]; !born {
		return nil
	}
	// The broker publishes an NDEATH (the MQTT will) when a session ends,
	// possibly after the node's next NBIRTH on a new connection, on
	// another goroutine: only the death whose bdSeq matches the live
	// birth's ends the live session, compared and cleared in one step
	// (with the session read, so a birth between the read and the clear
	// survives even if it reused the bdSeq). A death without bdSeq, or of
	// a birth without one, ends the session read.
	cond := same(got)
	if _, ok := got[fieldBdSeq]; ok {
		for _, m := range msg.Payload.Metrics {
			if m.Name == BdSeqMetric && (m.Kind == KindInt || m.Kind == KindLong) {
				cond[fieldBdSeq] = strconv.FormatUint(m.Uint, 10)
			}
		}
	}
	o, err := t.write(ctx, node, Write{Clear: true, If: cond})
	msg.Stale = err == nil && o == OutcomeStale
	return err
}
