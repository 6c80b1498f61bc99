package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"firehose/internal/testenv"
)

// createTypedTable creates sim_telemetry by hand, as firehose migrate
// would from the rules sim-typed* (not partitioned: enough to verify).
func createTypedTable(t *testing.T, db *pgxpool.Pool) {
	t.Helper()
	_, err := db.Exec(t.Context(), `CREATE TABLE sim_telemetry (
		device_id text NOT NULL, "time" timestamptz NOT NULL, received_at timestamptz,
		site text, line text, temp real, pressure double precision, rpm integer,
		seq bigint NOT NULL, msg_id text, extra jsonb)`)
	if err != nil {
		t.Fatal(err)
	}
}

// typedRowIn is a row of sim_telemetry as the pipeline writes it.
type typedRowIn struct {
	device      string
	ms          int64
	site, line  *string
	temp, press *float64
	rpm         *int64
	seq         int64
	msgID       string
	extra       *string
	old         bool // received an hour before the run's scope opened
}

// pipelineRow is the row the rules sim-typed* make of unit seq of d: its
// message as the device sends it, decoded as the edge does (the topic's
// site and line over MQTT; known paths to columns, the other fields but
// "device" to extra).
func pipelineRow(t *testing.T, d *device, seq uint64, k int) typedRowIn {
	t.Helper()
	dev := d.id
	if d.mqtt {
		dev = ""
	}
	msg := appendTelemetry(nil, dev, d.id, seq, d.ts[seq-1], d.values[seq-1], k)
	dec := json.NewDecoder(bytes.NewReader(msg))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("message %s: %v", msg, err)
	}
	num := func(key string) json.Number {
		n, _ := m[key].(json.Number)
		delete(m, key)
		return n
	}
	var r typedRowIn
	r.device = d.id
	r.ms, _ = num("t").Int64()
	r.seq, _ = num("seq").Int64()
	r.msgID, _ = m["msg_id"].(string)
	delete(m, "msg_id")
	delete(m, "device")
	if n := num("temp"); n != "" {
		x, _ := n.Float64()
		r.temp = &x
	}
	if n := num("pressure"); n != "" {
		x, _ := n.Float64()
		r.press = &x
	}
	if n := num("rpm"); n != "" {
		x, _ := n.Int64()
		r.rpm = &x
	}
	if len(m) > 0 {
		b, _ := json.Marshal(m)
		s := string(b)
		r.extra = &s
	}
	if d.mqtt {
		parts := strings.Split(telemetryTopic(d, "typed"), "/") // sim/{site}/{line}/{device_id}/typed
		r.site, r.line = &parts[1], &parts[2]
	}
	return r
}

func insertTypedRows(t *testing.T, db *pgxpool.Pool, rows []typedRowIn) {
	t.Helper()
	for _, r := range rows {
		ago := "0"
		if r.old {
			ago = "1 hour"
		}
		_, err := db.Exec(t.Context(), `INSERT INTO sim_telemetry
			(device_id, "time", received_at, site, line, temp, pressure, rpm, seq, msg_id, extra)
			VALUES ($1, $2, now() - $3::text::interval, $4, $5, $6::float8, $7, $8, $9, $10, $11::text::jsonb)`,
			r.device, time.UnixMilli(r.ms), ago, r.site, r.line, r.temp, r.press, r.rpm, r.seq, r.msgID, r.extra)
		if err != nil {
			t.Fatalf("insert %+v: %v", r, err)
		}
	}
}

// typedFleet is a fleet of the shape typed of 3 devices (sim-r-2 over
// MQTT, the others over HTTP), each with 5 acknowledged messages in its
// ledger.
func typedFleet(t *testing.T, k int) *fleet {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Shape, cfg.Protocol, cfg.Devices, cfg.MetricCount, cfg.RunID = ShapeTyped, ProtocolMixed, 3, k, "r"
	cfg.LandTimeout, cfg.Rate = 20*time.Second, 0
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f := newFleet(&cfg, slog.New(slog.DiscardHandler))
	f.start = time.Now().Add(-time.Second)
	base := time.Now().Add(-time.Minute).UnixMilli()
	for _, d := range f.devices {
		for j := range 5 {
			d.step()
			d.add(base+int64(1000*d.idx+j), flagSent|flagAcked)
			d.values = append(d.values, d.value)
		}
	}
	f.c.sent.Store(15)
	f.c.acked.Store(15)
	f.c.requests.Store(15)
	return f
}

// TestIntegrationTypedVerification: rows of sim_telemetry written as the
// pipeline would, some missing, duplicated or wrong, are counted and
// checked column by column as a run of --shape typed does after sending.
func TestIntegrationTypedVerification(t *testing.T) {
	for _, tc := range []struct {
		name string
		k    int
		// spoil changes the correct rows (by device index and seq) and
		// returns the rows to insert.
		spoil func(t *testing.T, f *fleet, rows map[[2]int]typedRowIn) []typedRowIn
		want  func(t *testing.T, land *Landing, rep *Report)
	}{{
		name: "three metrics",
		k:    3,
		spoil: func(t *testing.T, f *fleet, rows map[[2]int]typedRowIn) []typedRowIn {
			delete(rows, [2]int{0, 3}) // sim-r-1 seq 3 never landed
			wrongRPM := rows[[2]int{1, 4}]
			*wrongRPM.rpm++
			rows[[2]int{1, 4}] = wrongRPM
			wrongSite := rows[[2]int{1, 5}]
			s := "site9"
			wrongSite.site = &s
			rows[[2]int{1, 5}] = wrongSite
			out := sortedRows(rows)
			out = append(out, rows[[2]int{1, 2}]) // sim-r-2 seq 2 twice
			stray := rows[[2]int{0, 1}]
			stray.ms += 500 // a unit the device never sent
			out = append(out, stray)
			earlier := rows[[2]int{2, 1}]
			earlier.old = true // an earlier run of the same id: out of scope
			out = append(out, earlier)
			other := rows[[2]int{2, 2}]
			other.device = "sim-other-3" // another run
			return append(out, other)
		},
		want: func(t *testing.T, land *Landing, rep *Report) {
			if land.RowsAcked != 15 || land.RowsLanded != 15 || land.Rows != 16 || land.Readings != 14 ||
				land.Missing != 1 || land.DupOnceAcked != 1 || land.Unexpected != 1 ||
				len(land.MissingSample) != 1 || land.MissingSample[0] != (Ref{"sim-r-1 sim_telemetry", 3}) ||
				len(land.DupOnceAckedSample) != 1 || land.DupOnceAckedSample[0] != (Ref{"sim-r-2 sim_telemetry", 2}) {
				t.Errorf("landing %+v", land)
			}
			c := land.Columns
			if c == nil || c.Rows != 15 || c.Mismatched != 2 || len(c.Types) != 0 ||
				c.ByColumn["rpm"] != 1 || c.ByColumn["site"] != 1 || len(c.ByColumn) != 2 || len(c.Sample) != 2 {
				t.Fatalf("columns %+v", c)
			}
			want := map[string]ColumnMismatch{
				"rpm":  {Device: "sim-r-2", Seq: 4, Column: "rpm", Want: "1204", Got: "1205"},
				"site": {Device: "sim-r-2", Seq: 5, Column: "site", Want: "site1", Got: "site9"},
			}
			for _, m := range c.Sample {
				if m != want[m.Column] {
					t.Errorf("mismatch %+v, want %+v", m, want[m.Column])
				}
			}
			if len(rep.Failures) != 4 || !strings.Contains(rep.Failures[3], "2 of 15 rows of sim_telemetry differ") ||
				!strings.Contains(rep.Failures[3], "sim-r-2 seq 4 rpm: want 1204, got 1205") {
				t.Errorf("failures %q", rep.Failures)
			}
		},
	}, {
		name: "five metrics, two in extra",
		k:    5,
		spoil: func(t *testing.T, f *fleet, rows map[[2]int]typedRowIn) []typedRowIn {
			if e := rows[[2]int{0, 1}].extra; e == nil || !strings.Contains(*e, `"m3"`) || !strings.Contains(*e, `"m4"`) {
				t.Fatalf("extra %v, want m3 and m4", e)
			}
			noExtra := rows[[2]int{0, 2}]
			noExtra.extra = nil
			rows[[2]int{0, 2}] = noExtra
			badTemp := rows[[2]int{2, 3}]
			x := *badTemp.temp + 0.5
			badTemp.temp = &x
			rows[[2]int{2, 3}] = badTemp
			return sortedRows(rows)
		},
		want: func(t *testing.T, land *Landing, rep *Report) {
			if land.RowsAcked != 15 || land.RowsLanded != 15 || land.Missing != 0 || land.DupOnceAcked != 0 || land.Unexpected != 0 {
				t.Errorf("landing %+v", land)
			}
			c := land.Columns
			if c == nil || c.Rows != 15 || c.Mismatched != 2 || c.ByColumn["extra"] != 1 || c.ByColumn["temp"] != 1 {
				t.Fatalf("columns %+v", c)
			}
			for _, m := range c.Sample {
				if m.Column == "extra" && (m.Got != nullText || !strings.HasPrefix(m.Want, `{"m3":`)) {
					t.Errorf("extra mismatch %+v", m)
				}
			}
			if len(rep.Failures) != 1 || !strings.Contains(rep.Failures[0], "2 of 15 rows") {
				t.Errorf("failures %q", rep.Failures)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := pgxpool.New(t.Context(), testenv.Postgres(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			createTypedTable(t, db)
			f := typedFleet(t, tc.k)
			if f.scope, err = openScope(t.Context(), db, f.cfg.rowScope()); err != nil {
				t.Fatal(err)
			}
			rows := map[[2]int]typedRowIn{}
			for _, d := range f.devices {
				for seq := range uint64(5) {
					rows[[2]int{d.idx, int(seq + 1)}] = pipelineRow(t, d, seq+1, tc.k)
				}
			}
			insertTypedRows(t, db, tc.spoil(t, f, rows))

			sendEnd := time.Now()
			land, err := f.land(t.Context(), db, sendEnd)
			if err != nil {
				t.Fatal(err)
			}
			if land.TimedOut || land.HasCommitTimes {
				t.Errorf("timed out %v, commit times %v: want neither", land.TimedOut, land.HasCommitTimes)
			}
			rep := f.report(sendEnd, false, land)
			if rep.OK || rep.Send.RowsAcked != 15 || rep.Send.ReadingsAcked != int64(15*tc.k) {
				t.Errorf("report OK %v, rows acked %d, readings acked %d", rep.OK, rep.Send.RowsAcked, rep.Send.ReadingsAcked)
			}
			tc.want(t, land, rep)

			var sum, js bytes.Buffer
			if err := rep.WriteSummary(&sum); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(sum.String(), "table sim_telemetry") || !strings.Contains(sum.String(), "15 rows checked") {
				t.Errorf("summary:\n%s", sum.String())
			}
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			var back Report
			if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Landing.Columns == nil || back.Landing.Columns.Mismatched != 2 {
				t.Errorf("report.json columns: %v %+v", err, back.Landing)
			}
		})
	}
}

// TestIntegrationTypedTableTypes: a table unlike the rules' declaration is
// a failure named by column; with a column missing no row is checked.
func TestIntegrationTypedTableTypes(t *testing.T) {
	db, err := pgxpool.New(t.Context(), testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f := typedFleet(t, 3)
	if _, err := openScope(t.Context(), db, f.cfg.rowScope()); err == nil || !strings.Contains(err.Error(), "firehose migrate") {
		t.Errorf("no table: %v, want the advice to migrate", err)
	}
	createTypedTable(t, db)
	if f.scope, err = openScope(t.Context(), db, f.cfg.rowScope()); err != nil {
		t.Fatal(err)
	}
	insertTypedRows(t, db, []typedRowIn{pipelineRow(t, f.devices[0], 1, 3)})
	ctx := context.Background()
	if _, err := db.Exec(ctx, `ALTER TABLE sim_telemetry ALTER rpm TYPE bigint`); err != nil {
		t.Fatal(err)
	}
	c, err := verifyColumns(ctx, db, f.scope, f.devices, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Types) != 1 || c.Types[0] != "rpm: want integer, got bigint" || c.Rows != 1 || c.Mismatched != 0 || !c.Failed() {
		t.Errorf("rpm bigint: %+v", c)
	}
	if _, err := db.Exec(ctx, `ALTER TABLE sim_telemetry DROP COLUMN extra`); err != nil {
		t.Fatal(err)
	}
	if c, err = verifyColumns(ctx, db, f.scope, f.devices, 3); err != nil {
		t.Fatal(err)
	}
	if len(c.Types) != 2 || c.Types[1] != "extra: want jsonb, missing" || c.Rows != 0 {
		t.Errorf("no extra: %+v", c)
	}
	rep := &Report{Config: RunConfig{Shape: ShapeTyped}, Send: Send{Sent: 1, Acked: 1}, Landing: &Landing{Rows: 1, Columns: c}}
	if fs := rep.failures(); len(fs) != 1 || !strings.Contains(fs[0], "the table sim_telemetry is not as deploy/simulate-rules.yaml declares it") {
		t.Errorf("failures %q", fs)
	}
}

// sortedRows lists rows by device index and seq.
func sortedRows(rows map[[2]int]typedRowIn) []typedRowIn {
	var out []typedRowIn
	for d := range 3 {
		for seq := 1; seq <= 5; seq++ {
			if r, ok := rows[[2]int{d, seq}]; ok {
				out = append(out, r)
			}
		}
	}
	return out
}

// TestTypedColumnCheck: the comparison of one row, without PostgreSQL: temp
// as a float32, the metrics a short message lacks as NULL, extra by value.
func TestTypedColumnCheck(t *testing.T) {
	d := newDevice("r", 1, true)
	const v, seq = 21.4567, 7
	site, line := "site1", "line1"
	temp := float64(float32(21.457))
	press := telemetryValue(1, v, seq)
	rpm, n := int64(1207), int64(seq)
	id := "sim-r-2-7"
	extra := `{"m4": 25.457, "m3": 24.457}`
	good := typedRow{device: d.id, received: true, site: &site, line: &line, temp: &temp, pressure: &press,
		rpm: &rpm, seq: &n, msgID: &id, extra: &extra}
	var c ColumnCheck
	c.check(d, seq, v, 5, &good)
	if c.Rows != 1 || c.Mismatched != 0 {
		t.Fatalf("a good row: %+v", c)
	}
	// A double where a real is declared is not the message's value as a
	// real; a short message's row has no pressure, rpm nor extra.
	double := 21.457
	short := typedRow{device: d.id, received: true, site: &site, line: &line, temp: &double, seq: &n, msgID: &id}
	c = ColumnCheck{}
	c.check(d, seq, v, 1, &short)
	if c.Mismatched != 1 || c.ByColumn["temp"] != 1 || len(c.ByColumn) != 1 {
		t.Errorf("short row: %+v", c)
	}
	for _, tc := range []struct {
		name  string
		k     int
		extra *string
		ok    bool
	}{
		{"no extra at 3", 3, nil, true},
		{"extra at 3", 3, &extra, false},
		{"missing at 5", 5, nil, false},
		{"other keys", 5, ptr(`{"m3": 24.457, "seq": 7}`), false},
		{"another value", 5, ptr(`{"m3": 24.457, "m4": 25.458}`), false},
		{"not an object", 5, ptr(`[1, 2]`), false},
	} {
		if _, _, ok := extraTexts(v, seq, tc.k, tc.extra); ok != tc.ok {
			t.Errorf("%s: ok %v, want %v", tc.name, ok, tc.ok)
		}
	}
}

func ptr[T any](x T) *T { return &x }
