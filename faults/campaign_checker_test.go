package faults

import (
	"maps"
	"strconv"
	"testing"
	"time"
)

// TestCampaignCheckerCatches feeds the campaign's checker made-up answers
// and stores, one broken invariant each, and requires it to name exactly
// those (it needs no services, so it runs under -short too).
func TestCampaignCheckerCatches(t *testing.T) {
	base := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	row := func(id int) cRow {
		return cRow{Device: "cd1", Metric: "reading", Tag: "o" + string(rune('a'+id)), Value: float64(id), TS: base.Add(time.Duration(id) * time.Second), Dedupable: true}
	}
	stored := func(r cRow) cStored {
		s := cStored{Table: r.Table, Device: r.Device, Metric: r.Metric, Tag: r.Tag, Value: r.Value, TS: r.TS, Seq: r.Seq}
		if r.Table != "" {
			s.Extra = r.Tag // the cid kept in extra
		}
		return s
	}
	// rowOf is row 0, or with typed set (a case's typed field) the typed
	// table's row 0, as the typed class makes it; of device when set.
	rowOf := func(typed, device string) cRow {
		r := row(0)
		if typed != "" {
			r.Table, r.Metric, r.Tag, r.Seq = cTypedTable, "", "t0.0", 42
		}
		if device != "" {
			r.Device = device
		}
		return r
	}
	window := cWindow{From: base.Add(time.Minute), To: base.Add(2 * time.Minute)}
	ackedAt := base.Add(30 * time.Second)
	tests := []struct {
		name    string
		dedup   string
		outs    []string // outcome of op i (one row each)
		at      []time.Time
		stored  func(rows []cRow) []cStored
		refuse  bool
		cmds    []cReceived
		windows []cWindow
		dead    bool // a dead letter holds every message
		old     bool // the row is near the retention's age bound
		// sub: the ops are of the subscribed class, published at QoS
		// sub[0] to Mosquitto, which the subscriber reads at QoS sub[1];
		// resent is what Mosquitto resent and the subscriber retried.
		sub    [2]byte
		resent int
		// typed: the row is the typed table's, sent over "mqtt3", "mqtt5"
		// or "http"; bad: it breaks a column's type.
		typed string
		bad   bool
		// kind, client and device: the identity class's op kind, its
		// device, and the device its row names (default cd1); denied: what
		// the identity edge answered to its device's valid credentials.
		kind, client, device string
		denied               string
		want                 map[string]int
	}{
		{name: "acked and stored once", outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} }, want: map[string]int{}},
		{name: "acked, missing", outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return nil },
			want: map[string]int{"acknowledged means stored": 1}},
		{name: "acked, missing, dead-lettered", outs: []string{ansAcked}, dead: true, stored: func(r []cRow) []cStored { return nil }, want: map[string]int{}},
		{name: "refused, stored", outs: []string{ansRefused}, stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} },
			want: map[string]int{"nothing refused stored": 1}},
		{name: "unknown, stored once", outs: []string{ansUnknown}, stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} }, want: map[string]int{}},
		{name: "acked once, stored twice", outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return []cStored{stored(r[0]), stored(r[0])} },
			want: map[string]int{"nothing stored twice": 1}},
		{name: "another value", outs: []string{ansAcked}, stored: func(r []cRow) []cStored {
			s := stored(r[0])
			s.Value++
			return []cStored{s}
		}, want: map[string]int{"stored with the values sent": 1}},
		{name: "lost within a restore's window", outs: []string{ansAcked}, at: []time.Time{window.From.Add(time.Second)}, windows: []cWindow{window},
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{}},
		{name: "lost outside the window", outs: []string{ansAcked}, at: []time.Time{ackedAt}, windows: []cWindow{window},
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{"acknowledged means stored": 1}},
		{name: "answered after the kill, sent before", outs: []string{ansAcked}, at: []time.Time{window.To.Add(time.Millisecond / 2)}, windows: []cWindow{window},
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{}},
		{name: "sent after the kill", outs: []string{ansAcked}, at: []time.Time{window.To.Add(time.Second)}, windows: []cWindow{window},
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{"acknowledged means stored": 1}},
		{name: "a row nobody sent", outs: []string{ansAcked}, stored: func(r []cRow) []cStored {
			s := stored(r[0])
			s.Device = "cd2"
			return []cStored{stored(r[0]), s}
		}, want: map[string]int{"nothing stored that no client sent": 1}},
		{name: "resent under dedup, stored once", dedup: "id", outs: []string{ansAcked, ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} }, want: map[string]int{}},
		{name: "resent under dedup, stored twice", dedup: "id", outs: []string{ansAcked, ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0]), stored(r[0])} }, want: map[string]int{"nothing stored twice": 1}},
		{name: "resent without dedup, stored twice", outs: []string{ansAcked, ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0]), stored(r[0])} }, want: map[string]int{}},
		{name: "resent without dedup, stored once", outs: []string{ansAcked, ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} }, want: map[string]int{"acknowledged means stored": 1}},
		{name: "a probe of another device acknowledged", refuse: true, outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{"no device writes another's topics": 1}},
		{name: "a probe of another device stored", refuse: true, outs: []string{ansRefused},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} }, want: map[string]int{"no device changes another's data": 1}},
		{name: "another device's command received", outs: []string{ansRefused}, stored: func(r []cRow) []cStored { return nil },
			cmds: []cReceived{{Subscriber: "cd1", Topic: "devices/cd1/commands", Payload: `{"from":"cd0"}`}, {Subscriber: "cd1", Topic: "devices/cd1/commands", Payload: `{"from":"cd1"}`}},
			want: map[string]int{"no device receives another's commands": 1}},
		{name: "a STATE probe delivered", refuse: true, outs: []string{ansRefused}, stored: func(r []cRow) []cStored { return nil },
			cmds: []cReceived{{Subscriber: cObserver, Topic: cStateTopic, Payload: `{"online":false}`}},
			want: map[string]int{"nothing refused delivered": 1}},
		{name: "an old reading acknowledged, deleted by retention", outs: []string{ansAcked}, old: true, stored: func(r []cRow) []cStored { return nil },
			want: map[string]int{"acknowledged means stored (retention)": 1}},
		{name: "an old reading refused, not stored", outs: []string{ansRefused}, old: true, stored: func(r []cRow) []cStored { return nil },
			want: map[string]int{}},
		{name: "subscribed, acked by Mosquitto, lost", sub: [2]byte{2, 2}, outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return nil },
			want: map[string]int{"acknowledged means stored": 1}},
		{name: "subscribed, acked by Mosquitto, stored once", sub: [2]byte{2, 2}, outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} },
			want: map[string]int{}},
		{name: "subscribed at QoS 2, stored twice", sub: [2]byte{2, 2}, resent: 5, outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0]), stored(r[0])} }, want: map[string]int{"nothing stored twice": 1}},
		{name: "subscribed at QoS 1, stored again, resent", sub: [2]byte{2, 1}, resent: 1, outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0]), stored(r[0])} }, want: map[string]int{}},
		{name: "subscribed at QoS 1, stored again, not resent", sub: [2]byte{1, 2}, outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0]), stored(r[0])} }, want: map[string]int{"nothing stored twice (subscriber, QoS 1)": 1}},
		// Under --dedup none, resent or not.
		{name: "subscribed at QoS 1 under dedup, stored again, resent", dedup: "id", sub: [2]byte{1, 1}, resent: 5, outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0]), stored(r[0])} },
			want:   map[string]int{"nothing stored twice": 1}},
		{name: "subscribed at QoS 1 under dedup, stored again, not resent", dedup: "natural", sub: [2]byte{1, 2}, outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0]), stored(r[0])} },
			want:   map[string]int{"nothing stored twice": 1}},
		{name: "subscribed at QoS 2 under dedup, published twice, stored once", dedup: "id", sub: [2]byte{2, 2}, outs: []string{ansAcked, ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} }, want: map[string]int{"acknowledged means stored": 1}},
		// The typed table's rows, judged as readings' are.
		{name: "typed, acked and stored once", typed: "mqtt5", outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} }, want: map[string]int{}},
		{name: "typed, acked, missing", typed: "http", outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return nil },
			want: map[string]int{"acknowledged means stored": 1}},
		{name: "typed, acked, missing, in an edge dead letter", typed: "mqtt3", dead: true, outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return nil },
			want: map[string]int{"acknowledged means stored": 1}},
		{name: "typed, old, acked, missing, in an edge dead letter", typed: "mqtt3", old: true, dead: true, outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return nil },
			want: map[string]int{}},
		{name: "typed, old, acked, missing", typed: "mqtt5", old: true, outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return nil },
			want: map[string]int{"acknowledged means stored (retention)": 1}},
		{name: "typed, acked once, stored twice", typed: "mqtt3", outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0]), stored(r[0])} }, want: map[string]int{"nothing stored twice": 1}},
		{name: "typed, resent under dedup, stored twice", typed: "http", dedup: "natural", outs: []string{ansAcked, ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0]), stored(r[0])} }, want: map[string]int{"nothing stored twice": 1}},
		{name: "typed, resent without dedup, stored twice", typed: "mqtt5", outs: []string{ansAcked, ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0]), stored(r[0])} }, want: map[string]int{}},
		{name: "typed, another seq", typed: "mqtt5", outs: []string{ansAcked}, stored: func(r []cRow) []cStored {
			s := stored(r[0])
			s.Seq++
			return []cStored{s}
		}, want: map[string]int{"stored with the values sent": 1}},
		{name: "typed, another v", typed: "http", outs: []string{ansAcked}, stored: func(r []cRow) []cStored {
			s := stored(r[0])
			s.Value = 0.5
			return []cStored{s}
		}, want: map[string]int{"stored with the values sent": 1}},
		{name: "typed, extra without the cid", typed: "mqtt3", outs: []string{ansAcked}, stored: func(r []cRow) []cStored {
			s := stored(r[0])
			s.Extra = ""
			return []cStored{s}
		}, want: map[string]int{"stored with the values sent": 1}},
		{name: "typed, refused, stored", typed: "mqtt5", outs: []string{ansRefused}, stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} },
			want: map[string]int{"nothing refused stored": 1}},
		{name: "typed, as another device", typed: "mqtt5", outs: []string{ansAcked}, stored: func(r []cRow) []cStored {
			s := stored(r[0])
			s.Device = "cd2"
			return []cStored{stored(r[0]), s}
		}, want: map[string]int{"nothing stored that no client sent": 1}},
		{name: "typed, bad, refused", typed: "mqtt5", bad: true, outs: []string{ansRefused}, stored: func(r []cRow) []cStored { return nil }, want: map[string]int{}},
		{name: "typed, bad, refused, stored", typed: "http", bad: true, outs: []string{ansRefused}, stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} },
			want: map[string]int{"nothing stored of a message its table refuses": 1}},
		{name: "typed, bad, acked over HTTP", typed: "http", bad: true, outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return nil },
			want: map[string]int{"a message its table refuses is refused": 1}},
		{name: "typed, bad, acked over MQTT 5, dead-lettered", typed: "mqtt5", bad: true, dead: true, outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return nil },
			want: map[string]int{"a message its table refuses is refused": 1}},
		{name: "typed, bad, acked over MQTT 3.1.1, dead-lettered", typed: "mqtt3", bad: true, dead: true, outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return nil },
			want: map[string]int{}},
		{name: "typed, bad, acked over MQTT 3.1.1, not dead-lettered", typed: "mqtt3", bad: true, outs: []string{ansAcked}, stored: func(r []cRow) []cStored { return nil },
			want: map[string]int{"a message its table refuses is refused": 1}},
		// The identity class: the identity edge's devices.
		{name: "identity, acked and stored once", kind: "ident-mqtt", client: "ci1", device: "ci1", outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} }, want: map[string]int{}},
		{name: "identity, acked over HTTP, missing", kind: "ident-http", client: "cr1", device: "cr1", outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{"acknowledged means stored": 1}},
		{name: "identity, a loaded device refused", kind: "ident-mqtt", client: "cr2", device: "cr2", outs: []string{ansRefused}, denied: "CONNACK refused 0x88",
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{"the identity edge admits the devices it loaded": 1}},
		{name: "identity, a registry device's secret refused over HTTP", kind: "ident-http", client: "cr2", device: "cr2", outs: []string{ansRefused}, denied: "401",
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{"the identity edge admits the devices it loaded": 1}},
		{name: "identity, a certificate device writing another's readings, acked", kind: "ident-probe", client: "ci0", device: "cr3", refuse: true, outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{"no device writes another's topics": 1}},
		{name: "identity, a registry device posting another's readings, stored", kind: "ident-probe-http", client: "cr0", device: "ci3", refuse: true, outs: []string{ansRefused},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} }, want: map[string]int{"no device changes another's data": 1}},
		{name: "identity, acked over HTTPS with a certificate, missing", kind: "ident-http", client: "ci2", device: "ci2", outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{"acknowledged means stored": 1}},
		{name: "identity, a certificate device posting another's readings over HTTPS, acked", kind: "ident-probe-http", client: "ci1", device: "cr2", refuse: true, outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{"no device writes another's topics": 1}},
		{name: "identity, a revoked certificate's request over HTTPS acked", kind: "ident-probe-http", client: "cx0", device: "cx0", refuse: true, outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{"a revoked certificate is refused": 1}},
		{name: "identity, a probe refused, not stored", kind: "ident-probe", client: "cr0", device: "ci3", refuse: true, outs: []string{ansRefused},
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{}},
		{name: "identity, a revoked certificate acked", kind: "ident-probe", client: "cx1", device: "cx1", refuse: true, outs: []string{ansAcked},
			stored: func(r []cRow) []cStored { return nil }, want: map[string]int{"a revoked certificate is refused": 1}},
		{name: "identity, a revoked certificate's reading stored", kind: "ident-probe", client: "cx0", device: "cx0", refuse: true, outs: []string{ansUnknown},
			stored: func(r []cRow) []cStored { return []cStored{stored(r[0])} }, want: map[string]int{"a revoked certificate is refused": 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dedup := tc.dedup
			if dedup == "" {
				dedup = "off"
			}
			plan := &cPlan{Dedup: dedup, SubQoS: int(tc.sub[1])}
			var answers []cAnswer
			for i, out := range tc.outs {
				// Every op carries the same row: later ones are resends.
				r := rowOf(tc.typed, tc.device)
				r.Old, r.Bad = tc.old, tc.bad
				op := &cOp{ID: i, Kind: "v1", Client: "cd1", Rows: []cRow{r}, Refuse: tc.refuse}
				if tc.kind != "" {
					op.Kind, op.Client = tc.kind, tc.client
					if tc.kind == "ident-mqtt" || tc.kind == "ident-probe" {
						op.Proto, op.QoS, op.Topic = cIdentProto(tc.client), 1, "devices/"+tc.device+"/readings"
					}
				}
				switch tc.typed {
				case "http":
					op.Kind, op.Path = "typed-http", "/v1/readings?rule=campaign-typed-http"
				case "mqtt3", "mqtt5":
					op.Kind, op.Proto, op.QoS, op.Topic = "typed", int(tc.typed[4]-'0'), 1, cTypedTopic("cd1")
				}
				if tc.sub[0] != 0 {
					// As the generator makes them: dedupable when delivered at QoS 1.
					op.Kind, op.QoS, op.Topic = "subscribed", tc.sub[0], cSubTopic("cd1")
					op.Rows[0].Dedupable = cSubDelivery(op.QoS, plan.SubQoS) == 1
				}
				plan.Ops = append(plan.Ops, op)
				at := ackedAt
				if i < len(tc.at) {
					at = tc.at[i]
				}
				answers = append(answers, cAnswer{Op: i, Outcomes: []string{out}, Sent: at.Add(-time.Millisecond), At: at, Denied: tc.denied})
			}
			st := cStore{Rows: tc.stored([]cRow{rowOf(tc.typed, tc.device)}), Commands: tc.cmds, SubResent: tc.resent}
			if tc.dead {
				tag := strconv.Quote(rowOf(tc.typed, tc.device).Tag)
				st.DeadLetters = func(needle []byte) (bool, error) { return string(needle) == tag, nil }
			}
			sum := check(plan, answers, tc.windows, st)
			got := map[string]int{}
			for _, v := range sum.Violations {
				got[v.Invariant]++
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("violations %v, want %v (%+v)", got, tc.want, sum.Violations)
			}
		})
	}
}
