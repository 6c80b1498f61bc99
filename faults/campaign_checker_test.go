package faults

import (
	"maps"
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
		return cStored{Device: r.Device, Metric: r.Metric, Tag: r.Tag, Value: r.Value, TS: r.TS}
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
		want   map[string]int
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
				r := row(0)
				r.Old = tc.old
				op := &cOp{ID: i, Kind: "v1", Client: "cd1", Rows: []cRow{r}, Refuse: tc.refuse}
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
				answers = append(answers, cAnswer{Op: i, Outcomes: []string{out}, Sent: at.Add(-time.Millisecond), At: at})
			}
			st := cStore{Rows: tc.stored([]cRow{row(0)}), Commands: tc.cmds, SubResent: tc.resent}
			if tc.dead {
				st.DeadLetters = func(needle []byte) (bool, error) { return string(needle) == `"oa"`, nil }
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
