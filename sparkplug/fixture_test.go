package sparkplug

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// The fixtures are encoded by Eclipse Tahu's encoder (testdata/gen.js, run
// by scripts/sparkplug-fixtures.sh); expected.json states what each message
// must decode to, written from the encoder's inputs.

type fixtureValue struct {
	Device    string  `json:"device"`
	Name      string  `json:"name"`
	Alias     *uint64 `json:"alias"`
	Datatype  uint32  `json:"datatype"`
	Timestamp int64   `json:"timestamp"`
	Null      bool    `json:"null"`
	Number    *string `json:"number"`
	Inexact   bool    `json:"inexact"`
	Other     any     `json:"other"`
}

type fixtureStep struct {
	Topic          string         `json:"topic"`
	File           string         `json:"file"`
	Values         []fixtureValue `json:"values"`
	Invalid        int            `json:"invalid"`
	Rebirth        string         `json:"rebirth"`
	UnknownAliases []uint64       `json:"unknown_aliases"`
	SeqWant        *uint64        `json:"seq_want"`
	Stale          bool           `json:"stale"`
}

type fixtureScenario struct {
	Name  string        `json:"name"`
	What  string        `json:"what"`
	Steps []fixtureStep `json:"steps"`
}

func loadFixtures(t testing.TB) []fixtureScenario {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "expected.json"))
	if err != nil {
		t.Fatalf("read fixtures (scripts/sparkplug-fixtures.sh makes them): %v", err)
	}
	var doc struct {
		Scenarios []fixtureScenario `json:"scenarios"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse expected.json: %v", err)
	}
	if len(doc.Scenarios) == 0 {
		t.Fatal("expected.json has no scenarios")
	}
	return doc.Scenarios
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fixtures", name))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return b
}

func TestFixtures(t *testing.T) {
	for _, sc := range loadFixtures(t) {
		t.Run(sc.Name, func(t *testing.T) {
			runScenario(t, NewTracker(NewMemoryStore()), sc)
		})
	}
}

func TestIntegrationRedisStoreFixtures(t *testing.T) {
	rdb, prefix := TestRedis(t)
	for _, sc := range loadFixtures(t) {
		t.Run(sc.Name, func(t *testing.T) {
			runScenario(t, NewTracker(NewRedisStore(rdb, prefix+":"+sc.Name+":")), sc)
		})
	}
}

func runScenario(t *testing.T, tr *Tracker, sc fixtureScenario) {
	t.Helper()
	for i, st := range sc.Steps {
		msg, err := tr.Handle(t.Context(), st.Topic, readFixture(t, st.File))
		if err != nil {
			t.Fatalf("step %d %s: %v", i, st.File, err)
		}
		checkStep(t, fmt_step(i, st), msg, st)
	}
}

func fmt_step(i int, st fixtureStep) string { return strconv.Itoa(i) + " " + st.File }

func checkStep(t *testing.T, where string, msg *Message, st fixtureStep) {
	t.Helper()
	switch {
	case st.Rebirth == "" && msg.Rebirth != nil:
		t.Errorf("%s: unexpected rebirth: %v", where, msg.Rebirth)
	case st.Rebirth != "" && msg.Rebirth == nil:
		t.Errorf("%s: no rebirth, want %q", where, st.Rebirth)
	case st.Rebirth != "" && msg.Rebirth.Reason.String() != st.Rebirth:
		t.Errorf("%s: rebirth %v, want %q", where, msg.Rebirth, st.Rebirth)
	case st.Rebirth == "unknown alias" && !slices.Equal(msg.Rebirth.Aliases, st.UnknownAliases):
		t.Errorf("%s: unknown aliases %v, want %v", where, msg.Rebirth.Aliases, st.UnknownAliases)
	case st.SeqWant != nil && (msg.Rebirth == nil || msg.Rebirth.Want != *st.SeqWant):
		t.Errorf("%s: rebirth %v, want seq %d expected", where, msg.Rebirth, *st.SeqWant)
	}
	if msg.Stale != st.Stale {
		t.Errorf("%s: stale %v, want %v", where, msg.Stale, st.Stale)
	}
	if len(msg.Invalid) != st.Invalid {
		t.Errorf("%s: %d invalid metrics (%v), want %d", where, len(msg.Invalid), msg.Invalid, st.Invalid)
	}
	if len(msg.Values) != len(st.Values) {
		t.Fatalf("%s: %d values, want %d: %+v", where, len(msg.Values), len(st.Values), msg.Values)
	}
	for j, want := range st.Values {
		got := msg.Values[j]
		at := where + ": value " + strconv.Itoa(j) + " " + want.Name
		if got.Device != want.Device || got.Name != want.Name || uint32(got.Datatype) != want.Datatype {
			t.Errorf("%s: device/name/datatype %q/%q/%d, want %q/%q/%d", at, got.Device, got.Name, got.Datatype, want.Device, want.Name, want.Datatype)
		}
		if want.Alias != nil && (!got.HasAlias || got.Alias != *want.Alias) {
			t.Errorf("%s: alias %d (%v), want %d", at, got.Alias, got.HasAlias, *want.Alias)
		}
		if !got.Timestamp.Equal(time.UnixMilli(want.Timestamp)) {
			t.Errorf("%s: timestamp %v, want %v", at, got.Timestamp, time.UnixMilli(want.Timestamp))
		}
		if got.Null != want.Null {
			t.Errorf("%s: null %v, want %v", at, got.Null, want.Null)
		}
		if want.Number != nil {
			w, err := strconv.ParseFloat(*want.Number, 64)
			if err != nil {
				t.Fatalf("%s: expected number %q: %v", at, *want.Number, err)
			}
			if !got.Numeric || !(got.Number == w || math.IsNaN(w) && math.IsNaN(got.Number)) {
				t.Errorf("%s: number %v (numeric %v), want %s", at, got.Number, got.Numeric, *want.Number)
			}
			if got.Inexact != want.Inexact {
				t.Errorf("%s: inexact %v, want %v", at, got.Inexact, want.Inexact)
			}
		} else if got.Numeric {
			t.Errorf("%s: numeric %v, want none", at, got.Number)
		}
		if want.Other != nil {
			var g any = got.Other
			if b, ok := got.Other.([]byte); ok {
				g = base64.StdEncoding.EncodeToString(b)
			}
			if g != want.Other {
				t.Errorf("%s: other %#v, want %#v", at, g, want.Other)
			}
		}
	}
}

// TestRebirthRequestFixture keeps testdata/rebirth.bin, which
// scripts/sparkplug-fixtures.sh decodes with Tahu's decoder, equal to what
// RebirthRequest sends; SPARKPLUG_WRITE_REBIRTH=1 rewrites it.
func TestRebirthRequestFixture(t *testing.T) {
	topic, payload, err := RebirthRequest("plant1", "edge1", time.UnixMilli(1700000000000))
	if err != nil {
		t.Fatal(err)
	}
	if topic != "spBv1.0/plant1/NCMD/edge1" {
		t.Errorf("topic %q", topic)
	}
	path := filepath.Join("testdata", "rebirth.bin")
	if os.Getenv("SPARKPLUG_WRITE_REBIRTH") == "1" {
		if err := os.WriteFile(path, payload, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s (scripts/sparkplug-fixtures.sh makes it): %v", path, err)
	}
	if string(want) != string(payload) {
		t.Errorf("RebirthRequest payload %x, testdata/rebirth.bin %x: run scripts/sparkplug-fixtures.sh", payload, want)
	}
	p, err := DecodePayload(payload)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Metrics) != 1 || p.Metrics[0].Name != RebirthMetric || p.Metrics[0].Datatype != Boolean ||
		p.Metrics[0].Kind != KindBoolean || p.Metrics[0].Uint != 1 || p.Timestamp != 1700000000000 {
		t.Errorf("decoded %+v", p)
	}
}
