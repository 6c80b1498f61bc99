package mqttmsg

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"firehose/ingest"
	"firehose/internal/spbtest"
	"firehose/mapping"
	"firehose/sparkplug"
)

// jsonEqual reports whether two JSON texts hold the same value.
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// pressRules maps factory/{site}/{device_id}/telemetry: two metrics a
// message.
func pressRules(t testing.TB) *mapping.Mapper {
	t.Helper()
	rules, err := mapping.New([]mapping.Rule{{Name: "press", Topic: "factory/{site}/{device_id}/telemetry", Metrics: []string{"temp", "pressure"}}})
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

// newReader is a Reader of the default readings topic, pressRules and, if
// store is not nil, Sparkplug B over store.
func newReader(t testing.TB, store sparkplug.Store, c Config) *Reader {
	t.Helper()
	if c.Rules == nil {
		c.Rules = pressRules(t)
	}
	if store != nil {
		c.Sparkplug = sparkplug.NewTracker(store)
	}
	rd, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

func TestNewRefusesABadTemplate(t *testing.T) {
	_, err := New(Config{Topic: "devices/readings"})
	if err == nil || !strings.Contains(err.Error(), "--mqtt-topic") || !strings.Contains(err.Error(), "must contain {device_id}") {
		t.Fatalf("New with a template without {device_id}: %v", err)
	}
	rd, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if f := rd.Template().Filter(); f != "devices/+/readings" {
		t.Errorf("the default template's filter is %q", f)
	}
}

func TestRoute(t *testing.T) {
	spb := newReader(t, sparkplug.NewMemoryStore(), Config{})
	noSpb := newReader(t, nil, Config{})
	ruleFirst := newReader(t, nil, Config{Rules: func() *mapping.Mapper {
		m, err := mapping.New([]mapping.Rule{{Name: "raw", Topic: "devices/{device_id}/readings", Metrics: []string{"v"}}})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}()})
	for _, tc := range []struct {
		name       string
		rd         *Reader
		topic      string
		kind       Kind
		device     string
		rule       string
		command    bool
		malformed  bool
		sparkplugT sparkplug.MessageType
	}{
		{name: "readings topic", rd: spb, topic: "devices/pump-7/readings", kind: Topic, device: "pump-7"},
		{name: "readings topic, empty device", rd: spb, topic: "devices//readings", kind: Topic},
		{name: "other topic", rd: spb, topic: "devices/pump-7/status", kind: Pass},
		{name: "rule", rd: spb, topic: "factory/a/press-1/telemetry", kind: Rule, rule: "press"},
		{name: "a rule before the readings topic", rd: ruleFirst, topic: "devices/pump-7/readings", kind: Rule, rule: "raw"},
		{name: "sparkplug NDATA", rd: spb, topic: "spBv1.0/g/NDATA/e", kind: Sparkplug, device: "g/e", sparkplugT: sparkplug.NDATA},
		{name: "sparkplug DDATA", rd: spb, topic: "spBv1.0/g/DDATA/e/d", kind: Sparkplug, device: "g/e/d", sparkplugT: sparkplug.DDATA},
		{name: "sparkplug NCMD", rd: spb, topic: "spBv1.0/g/NCMD/e", kind: Sparkplug, device: "g/e", command: true, sparkplugT: sparkplug.NCMD},
		{name: "sparkplug STATE", rd: spb, topic: "spBv1.0/STATE/host", kind: Sparkplug, command: true, sparkplugT: sparkplug.STATE},
		{name: "sparkplug malformed", rd: spb, topic: "spBv1.0/g/BOGUS/e", kind: Sparkplug, malformed: true},
		{name: "sparkplug off", rd: noSpb, topic: "spBv1.0/g/NDATA/e", kind: Pass},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := tc.rd.Route(tc.topic)
			if rt.Kind != tc.kind || rt.Device() != tc.device || rt.Rule() != tc.rule || rt.Command() != tc.command {
				t.Errorf("Route(%q) = kind %q device %q rule %q command %v; want %q %q %q %v",
					tc.topic, rt.Kind, rt.Device(), rt.Rule(), rt.Command(), tc.kind, tc.device, tc.rule, tc.command)
			}
			if got := errors.Is(rt.Err, sparkplug.ErrMalformed); got != tc.malformed {
				t.Errorf("Route(%q).Err = %v; want malformed %v", tc.topic, rt.Err, tc.malformed)
			}
			if !tc.malformed && rt.Sparkplug.Type != tc.sparkplugT {
				t.Errorf("Route(%q).Sparkplug.Type = %v, want %v", tc.topic, rt.Sparkplug.Type, tc.sparkplugT)
			}
		})
	}
}

// failingStore is a Sparkplug state store whose Redis is down.
type failingStore struct{ sparkplug.Store }

var errDown = errors.New("redis down")

func (failingStore) Get(context.Context, string, []string) (map[string]string, error) {
	return nil, errDown
}

func (failingStore) Write(context.Context, string, sparkplug.Write) (sparkplug.Outcome, error) {
	return 0, errDown
}

// row is what a test checks of a reading.
type row struct {
	device, metric, id string
	value              float64
}

func TestRead(t *testing.T) {
	at := time.Now().UTC().Truncate(time.Millisecond)
	birth := spbtest.Payload(at, 0, 7, spbtest.Named("temp", 1, 20), spbtest.Named("pressure", 2, 1))
	type msg struct {
		topic   string
		payload []byte
		qos     byte
		id      string
		owner   string
	}
	for _, tc := range []struct {
		name   string
		store  func() sparkplug.Store // nil: Sparkplug B off
		limits ingest.Limits
		before []msg // read first, without errors
		m      msg
		// What Read returns.
		rows       []row
		payload    string // the first reading's payload, if not ""
		wantErr    func(error) bool
		unresolved bool
		rebirth    bool
		session    bool
	}{
		{name: "pass", m: msg{topic: "chat/x", payload: []byte("hello")}},
		{
			name: "readings topic, object and msg_id",
			m:    msg{topic: "devices/pump-7/readings", payload: []byte(`{"reading": 21.5, "battery": 97}`), qos: 1, id: "m-1"},
			rows: []row{{"pump-7", "", "m-1", 21.5}}, payload: `{"battery": 97}`,
		},
		{
			name: "readings topic, bare number",
			m:    msg{topic: "devices/pump-7/readings", payload: []byte(`21.5`)},
			rows: []row{{"pump-7", "", "", 21.5}},
		},
		{
			name:    "readings topic, invalid payload",
			m:       msg{topic: "devices/pump-7/readings", payload: []byte(`not a reading`), qos: 1},
			wantErr: func(err error) bool { return errors.Is(err, ingest.ErrInvalidReading) },
		},
		{
			name:    "readings topic, empty device",
			m:       msg{topic: "devices//readings", payload: []byte(`1`)},
			wantErr: func(err error) bool { return errors.Is(err, ingest.ErrInvalidReading) },
		},
		{
			name: "rule, rows named after msg_id",
			m:    msg{topic: "factory/a/press-1/telemetry", payload: []byte(`{"temp": 20.5, "pressure": 1.5}`), qos: 1, id: "m-2"},
			rows: []row{{"press-1", "temp", "m-2#0", 20.5}, {"press-1", "pressure", "m-2#1", 1.5}},
		},
		{
			name:    "rule, unmappable",
			m:       msg{topic: "factory/a/press-1/telemetry", payload: []byte(`[1]`), qos: 1},
			wantErr: func(err error) bool { var me *mapping.Error; return errors.As(err, &me) },
		},
		{
			name:  "sparkplug NBIRTH",
			store: memoryStore,
			m:     msg{topic: "spBv1.0/g/NBIRTH/e", payload: birth, qos: 1},
			rows: []row{{"g/e", "sparkplug/NBIRTH", "", 0}, {"g/e", sparkplug.BdSeqMetric, "", 7},
				{"g/e", "temp", "", 20}, {"g/e", "pressure", "", 1}},
			payload: `{"type": "NBIRTH", "metrics": 3}`,
			session: true,
		},
		{
			name:   "sparkplug NDATA by alias",
			store:  memoryStore,
			before: []msg{{topic: "spBv1.0/g/NBIRTH/e", payload: birth}},
			m:      msg{topic: "spBv1.0/g/NDATA/e", payload: spbtest.Payload(at, 1, -1, spbtest.Alias(2, 1.5), spbtest.Alias(1, 21)), qos: 1, id: "ignored"},
			rows:   []row{{"g/e", "pressure", "", 1.5}, {"g/e", "temp", "", 21}},
		},
		{
			name:  "sparkplug NDATA before its birth, QoS 1",
			store: memoryStore,
			m:     msg{topic: "spBv1.0/g/NDATA/e", payload: spbtest.Payload(at, 0, -1, spbtest.Alias(1, 1)), qos: 1},
			// The whole message is a dead letter; the edge node is asked.
			unresolved: true, rebirth: true,
		},
		{
			name:    "sparkplug NDATA before its birth, QoS 0",
			store:   memoryStore,
			m:       msg{topic: "spBv1.0/g/NDATA/e", payload: spbtest.Payload(at, 0, -1, spbtest.Alias(1, 1))},
			rebirth: true,
		},
		{
			name:   "sparkplug NDATA with an unknown alias, QoS 1",
			store:  memoryStore,
			before: []msg{{topic: "spBv1.0/g/NBIRTH/e", payload: birth}},
			m:      msg{topic: "spBv1.0/g/NDATA/e", payload: spbtest.Payload(at, 1, -1, spbtest.Alias(1, 3), spbtest.Alias(9, 4)), qos: 1},
			// Nothing partial.
			unresolved: true, rebirth: true,
		},
		{
			name:   "sparkplug NDATA with an unknown alias, QoS 0",
			store:  memoryStore,
			before: []msg{{topic: "spBv1.0/g/NBIRTH/e", payload: birth}},
			m:      msg{topic: "spBv1.0/g/NDATA/e", payload: spbtest.Payload(at, 1, -1, spbtest.Alias(1, 3), spbtest.Alias(9, 4))},
			// What resolved lands.
			rows: []row{{"g/e", "temp", "", 3}}, rebirth: true,
		},
		{
			name:  "sparkplug rebirth asked once",
			store: memoryStore,
			before: []msg{{topic: "spBv1.0/g/NBIRTH/e", payload: birth},
				{topic: "spBv1.0/g/NDATA/e", payload: spbtest.Payload(at, 1, -1, spbtest.Alias(9, 4))}},
			m:          msg{topic: "spBv1.0/g/NDATA/e", payload: spbtest.Payload(at, 2, -1, spbtest.Alias(9, 4)), qos: 1},
			unresolved: true,
		},
		{
			name:   "sparkplug NCMD stores nothing",
			store:  memoryStore,
			before: []msg{{topic: "spBv1.0/g/NBIRTH/e", payload: birth}},
			m:      msg{topic: "spBv1.0/g/NCMD/e", payload: spbtest.Payload(at, -1, -1, spbtest.Named("Node Control/Rebirth", 0, 1)), qos: 1},
		},
		{
			name:    "sparkplug malformed topic",
			store:   memoryStore,
			m:       msg{topic: "spBv1.0/g/BOGUS/e", payload: birth, qos: 1},
			wantErr: func(err error) bool { return errors.Is(err, sparkplug.ErrMalformed) },
		},
		{
			name:    "sparkplug malformed payload",
			store:   memoryStore,
			m:       msg{topic: "spBv1.0/g/NBIRTH/e", payload: []byte{0xff, 0xff}, qos: 1},
			wantErr: func(err error) bool { return errors.Is(err, sparkplug.ErrMalformed) },
		},
		{
			name:    "sparkplug over the owner's quota",
			store:   func() sparkplug.Store { return sparkplug.NewMemoryStore() },
			before:  []msg{{topic: "spBv1.0/g/NBIRTH/e1", payload: birth, owner: "o"}},
			m:       msg{topic: "spBv1.0/g/NBIRTH/e2", payload: birth, qos: 1, owner: "o"},
			wantErr: func(err error) bool { return errors.Is(err, sparkplug.ErrQuota) },
		},
		{
			name:    "sparkplug state store down",
			store:   func() sparkplug.Store { return failingStore{sparkplug.NewMemoryStore()} },
			m:       msg{topic: "spBv1.0/g/NBIRTH/e", payload: birth, qos: 1},
			wantErr: func(err error) bool { return errors.Is(err, ErrStateUnavailable) && errors.Is(err, errDown) },
		},
		{
			// The NBIRTH changed the state before its rows were found too
			// old: its session is still reported, to be ended.
			name:    "sparkplug rows invalid after the state changed",
			store:   memoryStore,
			limits:  ingest.Limits{MaxAge: time.Minute},
			m:       msg{topic: "spBv1.0/g/NBIRTH/e", payload: spbtest.Payload(at.Add(-time.Hour), 0, 7, spbtest.Named("temp", 1, 20)), qos: 1},
			wantErr: func(err error) bool { return errors.Is(err, ingest.ErrInvalidReading) },
			session: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var store sparkplug.Store
			if tc.store != nil {
				store = tc.store()
			}
			rd := newReader(t, store, Config{Limits: tc.limits})
			if rd.spb != nil {
				rd.spb.MaxNodes = 1
			}
			read := func(m msg) (Route, Result, error) {
				rt := rd.Route(m.topic)
				res, err := rd.Read(t.Context(), rt, Message{Topic: m.topic, Payload: m.payload, MessageID: m.id, QoS: m.qos, ReceivedAt: at, Owner: m.owner})
				return rt, res, err
			}
			for _, m := range tc.before {
				if _, _, err := read(m); err != nil {
					t.Fatalf("read %s first: %v", m.topic, err)
				}
			}
			rt, res, err := read(tc.m)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("Read: %v", err)
			case tc.wantErr != nil && !tc.wantErr(err):
				t.Fatalf("Read: error %v is not of the class wanted", err)
			}
			var got []row
			for _, r := range res.Readings {
				got = append(got, row{r.DeviceID, r.Metric, r.ID, r.Value})
				if !r.ReceivedAt.Equal(at) {
					t.Errorf("reading %+v: received at %v, want %v", r, r.ReceivedAt, at)
				}
			}
			if !reflect.DeepEqual(got, tc.rows) {
				t.Errorf("readings %+v, want %+v", got, tc.rows)
			}
			if tc.payload != "" && len(res.Readings) > 0 && !jsonEqual(res.Readings[0].Payload, []byte(tc.payload)) {
				t.Errorf("first reading's payload %s, want %s", res.Readings[0].Payload, tc.payload)
			}
			if (res.Unresolved != nil) != tc.unresolved || (tc.unresolved && !errors.Is(res.Unresolved, sparkplug.ErrRebirthNeeded)) {
				t.Errorf("Unresolved = %v, want %v", res.Unresolved, tc.unresolved)
			}
			if (res.Rebirth != nil) != tc.rebirth {
				t.Errorf("Rebirth = %v, want %v", res.Rebirth, tc.rebirth)
			}
			if res.Rebirth != nil && (res.Rebirth.Group != rt.Sparkplug.Group || res.Rebirth.EdgeNode != rt.Sparkplug.EdgeNode) {
				t.Errorf("Rebirth of %s/%s, want the message's edge node %s", res.Rebirth.Group, res.Rebirth.EdgeNode, rt.Sparkplug.Node())
			}
			if (res.Session != "") != tc.session {
				t.Errorf("Session = %q, want one: %v", res.Session, tc.session)
			}
		})
	}
}

func memoryStore() sparkplug.Store { return sparkplug.NewMemoryStore() }

// TestReadingIsRead: Reading gives the one reading Read gives on the
// readings topic, and refuses another route.
func TestReadingIsRead(t *testing.T) {
	rd := newReader(t, nil, Config{})
	at := time.Now()
	m := Message{Topic: "devices/pump-7/readings", Payload: []byte(`{"reading": 1, "x": "y"}`), MessageID: "id-1", QoS: 1, ReceivedAt: at}
	rt := rd.Route(m.Topic)
	one, err := rd.Reading(rt, m)
	if err != nil {
		t.Fatal(err)
	}
	res, err := rd.Read(t.Context(), rt, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Readings) != 1 || !reflect.DeepEqual(res.Readings[0], one) {
		t.Errorf("Read = %+v, Reading = %+v", res.Readings, one)
	}
	if _, err := rd.Reading(rd.Route("factory/a/b/telemetry"), m); err == nil {
		t.Error("Reading of a rule's route: no error")
	}
}

func TestResolver(t *testing.T) {
	at := time.Now().UTC().Truncate(time.Millisecond)
	store := sparkplug.NewMemoryStore()
	res := NewResolver(store, pressRules(t), ingest.Limits{})
	early := spbtest.Payload(at, 0, -1, spbtest.Alias(1, 1.5), spbtest.Alias(2, 2.5))
	for _, tc := range []struct {
		name    string
		d       ingest.DeadLetter
		rows    []row
		wantErr func(error) bool
	}{
		{
			name: "readings topic",
			d:    ingest.DeadLetter{Kind: ingest.KindTopic, Topic: "devices/pump-7/readings", Device: "pump-7", Payload: []byte(`21.5`)},
			rows: []row{{"pump-7", "", "", 21.5}},
		},
		{
			name:    "readings topic, still invalid",
			d:       ingest.DeadLetter{Kind: ingest.KindTopic, Topic: "devices/pump-7/readings", Device: "pump-7", Payload: []byte(`nope`)},
			wantErr: func(err error) bool { return errors.Is(err, ingest.ErrInvalidReading) },
		},
		{
			name: "rule",
			d:    ingest.DeadLetter{Kind: ingest.KindRule, Topic: "factory/a/press-1/telemetry", Payload: []byte(`{"temp": 1, "pressure": 2}`)},
			rows: []row{{"press-1", "temp", "", 1}, {"press-1", "pressure", "", 2}},
		},
		{
			name:    "rule gone",
			d:       ingest.DeadLetter{Kind: ingest.KindRule, Topic: "plant/x", Payload: []byte(`{}`)},
			wantErr: func(err error) bool { return errors.Is(err, ErrUnresolved) },
		},
		{
			name:    "sparkplug before its birth",
			d:       ingest.DeadLetter{Kind: ingest.KindSparkplug, Topic: "spBv1.0/g/NDATA/e", Device: "g/e", Payload: early},
			wantErr: func(err error) bool { return errors.Is(err, ErrUnresolved) },
		},
		{
			name:    "unknown decode path",
			d:       ingest.DeadLetter{Kind: "carrier-pigeon"},
			wantErr: func(err error) bool { return errors.Is(err, ErrUnresolved) },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.d.ReceivedAt = at
			rs, err := res.Resolve(t.Context(), tc.d)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("Resolve: %v", err)
			case tc.wantErr != nil && !tc.wantErr(err):
				t.Fatalf("Resolve: error %v is not of the class wanted", err)
			}
			var got []row
			for _, r := range rs {
				got = append(got, row{r.DeviceID, r.Metric, r.ID, r.Value})
			}
			if !reflect.DeepEqual(got, tc.rows) {
				t.Errorf("readings %+v, want %+v", got, tc.rows)
			}
		})
	}

	// Once the birth is known the Sparkplug dead letter resolves, against
	// the state a live Reader keeps, which the resolution does not change.
	rd := newReader(t, store, Config{})
	birth := spbtest.Payload(at, 0, 7, spbtest.Named("temp", 1, 20), spbtest.Named("pressure", 2, 1))
	if _, err := rd.Read(t.Context(), rd.Route("spBv1.0/g/NBIRTH/e"), Message{Topic: "spBv1.0/g/NBIRTH/e", Payload: birth, QoS: 1, ReceivedAt: at}); err != nil {
		t.Fatal(err)
	}
	d := ingest.DeadLetter{Kind: ingest.KindSparkplug, Topic: "spBv1.0/g/NDATA/e", Device: "g/e", Payload: early, ReceivedAt: at}
	for range 2 {
		rs, err := res.Resolve(t.Context(), d)
		if err != nil {
			t.Fatalf("resolve after the birth: %v", err)
		}
		var got []row
		for _, r := range rs {
			got = append(got, row{r.DeviceID, r.Metric, r.ID, r.Value})
		}
		if want := []row{{"g/e", "temp", "", 1.5}, {"g/e", "pressure", "", 2.5}}; !reflect.DeepEqual(got, want) {
			t.Errorf("resolved %+v, want %+v", got, want)
		}
	}
	data := spbtest.Payload(at, 1, -1, spbtest.Alias(1, 3))
	res2, err := rd.Read(t.Context(), rd.Route("spBv1.0/g/NDATA/e"), Message{Topic: "spBv1.0/g/NDATA/e", Payload: data, QoS: 1, ReceivedAt: at})
	if err != nil || res2.Rebirth != nil || len(res2.Readings) != 1 {
		t.Errorf("the live NDATA after the resolutions: %+v, %v; want its reading, no seq gap", res2, err)
	}
}

// BenchmarkReading reads a reading of the readings topic as the broker
// does, by value: it allocates nothing beyond what DecodePayload does.
func BenchmarkReading(b *testing.B) {
	rd := newReader(b, nil, Config{})
	m := Message{Topic: "devices/pump-7/readings", Payload: []byte(`{"reading": 21.5, "ts": "2026-11-28T08:00:00.123Z"}`), QoS: 1, ReceivedAt: time.Date(2026, 11, 28, 8, 0, 1, 0, time.UTC)}
	b.ReportAllocs()
	for b.Loop() {
		rt := rd.Route(m.Topic)
		if _, err := rd.Reading(rt, m); err != nil {
			b.Fatal(err)
		}
	}
}
