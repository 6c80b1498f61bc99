package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
	"firehose/typed"
)

// Typed tables as firehose migrate would create them (partitioned by their
// time column, with a DEFAULT partition), written here by hand: the DDL is
// schema's, the rows' landing the bridge's.
const typedDDL = `
CREATE TABLE press_telemetry (
    device_id text COLLATE "C" NOT NULL, site text, time timestamptz NOT NULL, ok boolean, n smallint,
    rpm integer, big bigint, temp real, p double precision, cost numeric, extra jsonb,
    fs double precision[], tags text[]
) PARTITION BY RANGE (time);
CREATE TABLE press_telemetry_default PARTITION OF press_telemetry DEFAULT;
CREATE TABLE pump_status (
    device_id text COLLATE "C" NOT NULL, time timestamptz NOT NULL, state text, alarm boolean
) PARTITION BY RANGE (time);
CREATE TABLE pump_status_default PARTITION OF pump_status DEFAULT;`

var (
	pressShape = &typed.Shape{Table: "press_telemetry", Columns: []typed.Column{
		{Name: "device_id", Type: typed.Text}, {Name: "site", Type: typed.Text}, {Name: "time", Type: typed.Timestamptz},
		{Name: "ok", Type: typed.Boolean}, {Name: "n", Type: typed.Smallint}, {Name: "rpm", Type: typed.Integer},
		{Name: "big", Type: typed.Bigint}, {Name: "temp", Type: typed.Real}, {Name: "p", Type: typed.Double},
		{Name: "cost", Type: typed.Numeric}, {Name: "extra", Type: typed.JSONB},
		{Name: "fs", Type: typed.DoubleArray}, {Name: "tags", Type: typed.TextArray},
	}}
	pumpShape = &typed.Shape{Table: "pump_status", Columns: []typed.Column{
		{Name: "device_id", Type: typed.Text}, {Name: "time", Type: typed.Timestamptz},
		{Name: "state", Type: typed.Text}, {Name: "alarm", Type: typed.Boolean},
	}}
)

// createTyped creates the typed tables in the test's database.
func (e *env) createTyped() {
	e.t.Helper()
	if _, err := e.pg.Exec(e.t.Context(), typedDDL); err != nil {
		e.t.Fatal(err)
	}
}

// pressRow is a press_telemetry row of device, its rpm seq.
func pressRow(device string, seq int) ingest.Reading {
	now := time.Now().UTC().Truncate(time.Microsecond)
	at := now.Add(-time.Duration(seq) * time.Millisecond)
	return ingest.Reading{DeviceID: device, Time: at, ReceivedAt: now, Row: &typed.Row{Shape: pressShape, Values: []typed.Value{
		{Str: device}, {Str: "berlin"}, typed.TimeValue(at), {Bool: seq%2 == 0}, {Int: 7}, {Int: int64(seq)},
		{Int: 1 << 40}, {Float: 21.5}, {Float: -0.125}, {Str: "12.50"}, {Str: `{"x":1}`},
		typed.FloatsValue([]float64{1, 2.5}), typed.StrsValue([]string{"a", ""}),
	}}}
}

// pumpRow is a pump_status row of device, its state "s<seq>".
func pumpRow(device string, seq int) ingest.Reading {
	now := time.Now().UTC().Truncate(time.Microsecond)
	at := now.Add(-time.Duration(seq) * time.Millisecond)
	return ingest.Reading{DeviceID: device, Time: at, ReceivedAt: now, Row: &typed.Row{Shape: pumpShape, Values: []typed.Value{
		{Str: device}, typed.TimeValue(at), {Str: fmt.Sprintf("s%d", seq)}, {Null: true},
	}}}
}

// addTyped writes rs to shard as one version-7 batch entry, as the
// producer does for a round trip with typed rows.
func (e *env) addTyped(shard int, rs ...ingest.Reading) string {
	e.t.Helper()
	body := make([]byte, ingest.BatchHeaderLen)
	for i := range rs {
		body = ingest.AppendBatchItemTyped(body, &rs[i])
	}
	body = ingest.FinishBatch(body, len(rs))
	return e.xadd(e.streams.Key(shard), ingest.FieldVersion, ingest.CodecTypedBatch, ingest.FieldCount, len(rs), ingest.FieldBody, body)
}

// mixedBatch is n rows of each table and n readings of device prefix p.
func mixedBatch(p string, from, n int) []ingest.Reading {
	var rs []ingest.Reading
	for i := from; i < from+n; i++ {
		rs = append(rs, pressRow(p+"-press", i), pumpRow(p+"-pump", i), reading(p+"-plain", i))
	}
	return rs
}

// waitTyped waits until the three tables hold press, pump and plain rows.
func (e *env) waitTyped(press, pump, plain int) {
	e.t.Helper()
	counts := func() string {
		return fmt.Sprintf("press_telemetry %d, pump_status %d, readings %d", e.count("SELECT count(*) FROM press_telemetry"),
			e.count("SELECT count(*) FROM pump_status"), e.count("SELECT count(*) FROM readings"))
	}
	want := fmt.Sprintf("press_telemetry %d, pump_status %d, readings %d", press, pump, plain)
	testenv.Eventually(e.t, 10*time.Second, func() bool { return counts() == want }, "have %s, want %s", counts(), want)
}

// TestIntegrationTypedRowsLandOnce: the producer's entries holding rows of
// two typed tables and readings rows, on one shard, land once each, every
// column with its value, and the metrics count the rows per table.
func TestIntegrationTypedRowsLandOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.createTyped()
	ctx, cancel := context.WithCancel(context.Background())
	p := stream.NewProducer(e.rdb, e.streams, stream.ProducerConfig{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	r := e.start(Config{BatchAge: 50 * time.Millisecond})

	sent := time.Now().UTC().Truncate(time.Microsecond).Add(-time.Second) // before any row's time (seq ms earlier)
	for i := range 10 {
		if err := p.Add(t.Context(), mixedBatch("once", i*5, 5)); err != nil {
			t.Fatal(err)
		}
	}
	e.waitTyped(50, 50, 50)
	e.waitDrained()
	for _, q := range []string{
		"SELECT count(*) - count(DISTINCT rpm) FROM press_telemetry",
		"SELECT count(*) - count(DISTINCT state) FROM pump_status",
		"SELECT count(*) - count(DISTINCT reading) FROM readings",
	} {
		if n := e.count(q); n != 0 {
			t.Errorf("%s = %d duplicates", q, n)
		}
	}
	// Every type, as PostgreSQL holds it.
	want := pressRow("once-press", 3)
	var (
		site, extra, cost string
		at                time.Time
		ok                bool
		n                 int16
		rpm               int32
		big               int64
		temp              float32
		pv                float64
		fs                []float64
		tags              []string
	)
	if err := e.pg.QueryRow(t.Context(), `SELECT site, time, ok, n, rpm, big, temp, p, cost::text, extra::text, fs, tags
		FROM press_telemetry WHERE rpm = 3`).Scan(&site, &at, &ok, &n, &rpm, &big, &temp, &pv, &cost, &extra, &fs, &tags); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(site, ok, n, rpm, big, temp, pv, cost, extra, fs, len(tags), tags[0], tags[1] == "")
	if exp := fmt.Sprint("berlin", false, 7, 3, int64(1<<40), float32(21.5), -0.125, "12.50", `{"x": 1}`, []float64{1, 2.5}, 2, "a", true); got != exp {
		t.Errorf("press row = %s, want %s", got, exp)
	}
	// The row's time is when mixedBatch made it: within the test's window,
	// however slow the box (want was made later, at the same offset).
	if at.Before(sent) || at.After(want.Row.Values[2].Time()) {
		t.Errorf("time = %v, want between %v and %v", at, sent, want.Row.Values[2].Time())
	}
	if n := e.count("SELECT count(*) FROM pump_status WHERE alarm IS NULL"); n != 50 {
		t.Errorf("%d NULL alarms, want 50", n)
	}
	for table, want := range map[string]float64{"press_telemetry": 50, "pump_status": 50, "readings": 50} {
		if got := testutil.ToFloat64(r.b.m.tableRows.WithLabelValues(table)); got != want {
			t.Errorf("firehose_bridge_table_rows_committed_total{table=%q} = %v, want %v", table, got, want)
		}
	}
	if got := testutil.ToFloat64(r.b.m.committed); got != 150 {
		t.Errorf("firehose_bridge_rows_committed_total = %v, want 150", got)
	}
	if n := e.count("SELECT rows FROM bridge_checkpoints"); n != 150 {
		t.Errorf("the checkpoint counts %d rows, want 150", n)
	}
}

// TestIntegrationTypedCrashBetweenCopyAndCheckpoint: the bridge's session
// dies after its COPYs into readings and both typed tables and before its
// checkpoint (its backend is terminated while the checkpoint waits on a
// lock): none of those rows commits, and the next session lands each row
// once in every table.
func TestIntegrationTypedCrashBetweenCopyAndCheckpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.createTyped()
	other, err := pgx.Connect(t.Context(), e.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	blocker, err := other.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(context.Background()) //nolint:errcheck // after Commit, a no-op
	// Reads of the checkpoint go on; its upsert waits.
	if _, err := blocker.Exec(t.Context(), "LOCK TABLE bridge_checkpoints IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	r := e.start(Config{BatchSize: 5000, BatchAge: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	e.addTyped(0, mixedBatch("crash", 0, 20)...)
	e.addTyped(0, mixedBatch("crash", 20, 20)...)
	var pid int
	testenv.Eventually(t, 10*time.Second, func() bool {
		err := e.pg.QueryRow(t.Context(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query ILIKE '%bridge_checkpoints%' AND query ILIKE 'insert%'`).Scan(&pid)
		return err == nil
	}, "the bridge's checkpoint is not waiting on the lock: %v", e.activity())
	// The COPYs ran in the transaction now waiting (the checkpoint comes
	// after them): the rows are written, not committed.
	if _, err := e.pg.Exec(t.Context(), "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return testutil.ToFloat64(r.b.m.errors.WithLabelValues("commit")) >= 1 },
		"the bridge did not see its commit fail")
	if n := e.count("SELECT count(*) FROM press_telemetry") + e.count("SELECT count(*) FROM pump_status") + e.count("SELECT count(*) FROM readings"); n != 0 {
		t.Fatalf("%d rows committed without their checkpoint", n)
	}
	if err := blocker.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.waitTyped(40, 40, 40)
	e.waitDrained()
	e.waitTyped(40, 40, 40)
	for _, q := range []string{
		"SELECT count(*) - count(DISTINCT rpm) FROM press_telemetry",
		"SELECT count(*) - count(DISTINCT state) FROM pump_status",
		"SELECT count(*) - count(DISTINCT reading) FROM readings",
	} {
		if n := e.count(q); n != 0 {
			t.Errorf("%s = %d duplicates", q, n)
		}
	}
	if n := e.count("SELECT count(*) FROM readings_rejected"); n != 0 {
		t.Errorf("%d rows rejected", n)
	}
}

// TestIntegrationTypedRefusedRowsAndReplay: a row its table refuses (a
// CHECK added by hand), the rows of a table that does not exist and those
// of a column dropped by hand go to readings_rejected, each with its own
// version-6 body and its table in the error, while the rest of the batch
// commits in every table; the missing table is counted and, once created,
// a replay lands its rows in it, once.
func TestIntegrationTypedRefusedRowsAndReplay(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.createTyped()
	if _, err := e.pg.Exec(t.Context(), `ALTER TABLE press_telemetry ADD CONSTRAINT rpm_positive CHECK (rpm >= 0);
		ALTER TABLE pump_status DROP COLUMN alarm`); err != nil {
		t.Fatal(err)
	}
	r := e.start(Config{BatchSize: 5000, BatchAge: 50 * time.Millisecond})
	goneShape := &typed.Shape{Table: "valve_events", Columns: []typed.Column{{Name: "device_id", Type: typed.Text}, {Name: "time", Type: typed.Timestamptz}}}
	var rs []ingest.Reading
	for i := range 10 {
		rs = append(rs, pressRow("ref-press", i), reading("ref-plain", i))
	}
	rs[6].Row.Values[5].Int = -1 // rpm of pressRow 3
	rs = append(rs, pumpRow("ref-pump", 1), pumpRow("ref-pump", 2))
	for i := range 3 {
		now := time.Now().UTC().Truncate(time.Microsecond)
		rs = append(rs, ingest.Reading{DeviceID: "ref-valve", Time: now, ReceivedAt: now, Row: &typed.Row{Shape: goneShape,
			Values: []typed.Value{{Str: fmt.Sprintf("valve-%d", i)}, typed.TimeValue(now)}}})
	}
	id := e.addTyped(0, rs...)
	testenv.Eventually(t, 10*time.Second, func() bool { return e.count("SELECT count(*) FROM readings_rejected") == 6 },
		"want 6 rejected rows, have %d", e.count("SELECT count(*) FROM readings_rejected"))
	e.waitTyped(9, 0, 10)

	type rej struct {
		id             int64
		entry, version string
		raw            []byte
		errText        string
	}
	rows, err := e.pg.Query(t.Context(), "SELECT id, entry_id, coalesce(version, ''), raw, error FROM readings_rejected ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (rej, error) {
		var r rej
		return r, row.Scan(&r.id, &r.entry, &r.version, &r.raw, &r.errText)
	})
	if err != nil {
		t.Fatal(err)
	}
	byTable := map[string][]rej{}
	for _, g := range got {
		back, err := ingest.Decode(g.version, string(g.raw))
		if err != nil || back.Row == nil {
			t.Fatalf("rejected row %d (version %q) does not decode to a typed row: %v", g.id, g.version, err)
		}
		if !strings.HasPrefix(g.entry, id+"/") || !strings.HasPrefix(g.errText, "table "+back.Row.Shape.Table+": ") {
			t.Errorf("rejected row %d: entry %s, error %q: want an item of %s and the table %s", g.id, g.entry, g.errText, id, back.Row.Shape.Table)
		}
		byTable[back.Row.Shape.Table] = append(byTable[back.Row.Shape.Table], g)
	}
	if len(byTable["press_telemetry"]) != 1 || len(byTable["pump_status"]) != 2 || len(byTable["valve_events"]) != 3 {
		t.Fatalf("rejected per table: %d press_telemetry, %d pump_status, %d valve_events; want 1, 2, 3",
			len(byTable["press_telemetry"]), len(byTable["pump_status"]), len(byTable["valve_events"]))
	}
	if !strings.Contains(byTable["press_telemetry"][0].errText, "23514") || !strings.Contains(byTable["valve_events"][0].errText, "42P01") ||
		!strings.Contains(byTable["pump_status"][0].errText, "42703") {
		t.Errorf("errors: %q, %q, %q", byTable["press_telemetry"][0].errText, byTable["valve_events"][0].errText, byTable["pump_status"][0].errText)
	}
	for table, want := range map[string]float64{"valve_events": 3, "pump_status": 2, "press_telemetry": 0} {
		if got := testutil.ToFloat64(r.b.m.missingTable.WithLabelValues(table)); got != want {
			t.Errorf("firehose_bridge_table_rows_missing_total{table=%q} = %v, want %v", table, got, want)
		}
	}
	if got := testutil.ToFloat64(r.b.m.rejected.WithLabelValues("refused")); got != 6 {
		t.Errorf("firehose_bridge_rows_rejected_total{reason=refused} = %v, want 6", got)
	}

	// The operator creates the table and replays its rows: each lands once
	// in it, however often it is replayed.
	if _, err := e.pg.Exec(t.Context(), `CREATE TABLE valve_events (device_id text NOT NULL, time timestamptz NOT NULL) PARTITION BY RANGE (time);
		CREATE TABLE valve_events_default PARTITION OF valve_events DEFAULT`); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for _, g := range byTable["valve_events"] {
			back, _ := ingest.Decode(g.version, string(g.raw))
			e.xadd(e.streams.Key(0), ingest.ReplayReading(g.id, &back)...)
		}
	}
	// The press row, repaired by dropping the CHECK, and the pump rows,
	// replayed as they are into the table still without their column:
	// refused again, each a new row naming its table.
	if _, err := e.pg.Exec(t.Context(), "ALTER TABLE press_telemetry DROP CONSTRAINT rpm_positive"); err != nil {
		t.Fatal(err)
	}
	for _, g := range append(byTable["press_telemetry"], byTable["pump_status"]...) {
		back, _ := ingest.Decode(g.version, string(g.raw))
		e.xadd(e.streams.Key(0), ingest.ReplayReading(g.id, &back)...)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return e.count("SELECT count(*) FROM readings_rejected WHERE replayed_at IS NULL") == 2 },
		"replays not committed: %d rows waiting", e.count("SELECT count(*) FROM readings_rejected WHERE replayed_at IS NULL"))
	if n := e.count("SELECT count(DISTINCT device_id) FROM valve_events WHERE device_id LIKE 'valve-%'"); n != 3 || e.count("SELECT count(*) FROM valve_events") != 3 {
		t.Errorf("valve_events holds %d rows (%d devices), want 3", e.count("SELECT count(*) FROM valve_events"), n)
	}
	if n := e.count("SELECT count(*) FROM press_telemetry WHERE rpm = -1"); n != 1 {
		t.Errorf("the repaired press row landed %d times, want 1", n)
	}
	if n := e.count("SELECT count(*) FROM readings_rejected WHERE replay_of IS NOT NULL AND error LIKE '%table pump_status: %'"); n != 2 {
		t.Errorf("%d pump rows refused again naming their table, want 2", n)
	}
	if got := testutil.ToFloat64(r.b.m.tableRows.WithLabelValues("valve_events")); got != 3 {
		t.Errorf("firehose_bridge_table_rows_committed_total{table=valve_events} = %v, want 3", got)
	}
}

// TestIntegrationTypedColumnTypeChanged: a column whose type was changed by
// hand to one its values cannot be sent as (text to integer) refuses each
// row alone, as PostgreSQL refusing it would; the rows of other tables
// commit.
func TestIntegrationTypedColumnTypeChanged(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.createTyped()
	if _, err := e.pg.Exec(t.Context(), "ALTER TABLE pump_status ALTER COLUMN state TYPE integer USING 0"); err != nil {
		t.Fatal(err)
	}
	e.start(Config{BatchSize: 5000, BatchAge: 50 * time.Millisecond})
	e.addTyped(0, mixedBatch("retyped", 0, 4)...)
	testenv.Eventually(t, 10*time.Second, func() bool { return e.count("SELECT count(*) FROM readings_rejected") == 4 },
		"want 4 rejected rows, have %d", e.count("SELECT count(*) FROM readings_rejected"))
	e.waitTyped(4, 0, 4)
	if n := e.count("SELECT count(*) FROM readings_rejected WHERE error LIKE 'table pump_status: %' AND version = '6'"); n != 4 {
		t.Errorf("%d rejected rows name pump_status, want 4", n)
	}
}

// TestIntegrationTablesStatus: the status of the tables rows land in is
// read from the catalog: a typed table's rows (an estimate, after ANALYZE)
// and size over its partitions, and a missing table said to be missing.
func TestIntegrationTablesStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.createTyped()
	if _, err := e.pg.Exec(t.Context(), `INSERT INTO pump_status (device_id, time, state)
		SELECT 'p', now() - i * interval '1 s', 'ok' FROM generate_series(1, 500) i; ANALYZE pump_status`); err != nil {
		t.Fatal(err)
	}
	got, err := Tables(t.Context(), e.pg, []string{"pump_status", "valve_events"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Exists || got[0].Rows != 500 || got[0].Bytes == 0 || got[1].Exists || got[1].Rows != 0 {
		t.Fatalf("tables %+v, want pump_status of 500 rows and valve_events missing", got)
	}
	var b strings.Builder
	if err := WriteTables(&b, got); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "pump_status") || !strings.Contains(b.String(), "500") || !strings.Contains(b.String(), "valve_events  (missing") {
		t.Errorf("WriteTables:\n%s", b.String())
	}
}
