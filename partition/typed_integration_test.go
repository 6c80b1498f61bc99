package partition_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"firehose/internal/testenv"
	"firehose/partition"
	"firehose/schema"
	"firehose/typed"
)

func pressTable() typed.Table {
	return typed.Table{Name: "press_telemetry", Rule: "press", TimeColumn: "time",
		Columns: []typed.Column{
			{Name: "device_id", Type: typed.Text}, {Name: "time", Type: typed.Timestamptz},
			{Name: "msg_id", Type: typed.Text}, {Name: "rpm", Type: typed.Integer},
		},
		Indexes: []typed.Index{{Columns: []string{"device_id", "time"}}, {Columns: []string{"msg_id"}, Unique: true}},
	}
}

// wherePress maps each device's press_telemetry rows to the partition
// holding them.
func wherePress(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	rows, err := pool.Query(t.Context(), "SELECT device_id, tableoid::regclass::text FROM press_telemetry")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var d, p string
		if err := rows.Scan(&d, &p); err != nil {
			t.Fatal(err)
		}
		out[d] = p
	}
	return out
}

func insertPress(t *testing.T, pool *pgxpool.Pool, device string, at time.Time) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), "INSERT INTO press_telemetry (device_id, time, msg_id, rpm) VALUES ($1, $2, $1, 1)", device, at); err != nil {
		t.Fatal(err)
	}
}

func pressPartitions(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'press_telemetry'::regclass ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// A typed table's partitions are kept as readings' are: created ahead,
// rows waiting in its default partition moved into theirs, each partition
// with the table's indexes, and retention dropping the old ones and old
// rows of the default partition; readings' are kept beside.
func TestIntegrationTypedTablePartitions(t *testing.T) {
	pool := open(t)
	ctx := t.Context()
	press := pressTable()
	if _, err := schema.EnsureTables(ctx, pool, []typed.Table{press}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	day := 24 * time.Hour
	now := time.Now().UTC()
	today := partition.Floor(now, day)
	insertPress(t, pool, "early", now) // before any partition exists
	for d := 1; d <= 5; d++ {          // earlier days, as a deployment running for a while has them
		lo := today.Add(-time.Duration(d) * day)
		name := partition.PartitionName(press.Name, lo)
		if _, err := pool.Exec(ctx, "CREATE TABLE "+name+" PARTITION OF press_telemetry FOR VALUES FROM ('"+
			lo.Format(time.RFC3339)+"') TO ('"+lo.Add(day).Format(time.RFC3339)+"')"); err != nil {
			t.Fatal(err)
		}
		insertPress(t, pool, name, lo.Add(time.Hour))
	}
	insertPress(t, pool, "ancient", now.AddDate(-1, 0, 0))
	reg := prometheus.NewRegistry()
	m := partition.New(partition.Config{Tables: []typed.Table{press}}, pool, slog.New(slog.DiscardHandler), reg)
	if err := m.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	got := wherePress(t, pool)
	if want := "press_telemetry_p" + today.Format("20060102"); got["early"] != want {
		t.Errorf("the row written before the first pass is in %q, want %q", got["early"], want)
	}
	if got["ancient"] != "press_telemetry_default" {
		t.Errorf("the year-old row is in %q, want the default partition", got["ancient"])
	}
	if ps := pressPartitions(t, pool); len(ps) != 10 {
		t.Errorf("partitions %v: want the default, 5 past days and 4 from today", ps)
	}
	if ps := partitions(t, pool); len(ps) != 5 {
		t.Errorf("readings' partitions %v: want the default and 4 days", ps)
	}
	var idx []string
	rows, err := pool.Query(ctx, "SELECT indexdef FROM pg_indexes WHERE tablename = $1 ORDER BY 1", partition.PartitionName(press.Name, today.Add(day)))
	if err == nil {
		idx, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil || len(idx) != 2 || !strings.Contains(idx[1], "UNIQUE INDEX") || !strings.Contains(idx[1], `(msg_id, "time")`) {
		t.Errorf("tomorrow's partition's indexes %q (%v): want the table's two", idx, err)
	}
	if c := testenv.Metric(t, reg, "firehose_partition_created_total", "table", "press_telemetry").GetCounter().GetValue(); c != 4 {
		t.Errorf("created_total{table=press_telemetry} %v, want 4", c)
	}
	if c := testenv.Metric(t, reg, "firehose_partition_moved_rows_total", "table", "press_telemetry").GetCounter().GetValue(); c != 1 {
		t.Errorf("moved_rows_total{table=press_telemetry} %v, want 1", c)
	}
	if c := testenv.Metric(t, reg, "firehose_partition_created_total", "table", "readings").GetCounter().GetValue(); c != 4 {
		t.Errorf("created_total{table=readings} %v, want 4", c)
	}

	// 2 days and a bit: the partitions of 3 days ago and before go, and the
	// year-old row of the default partition.
	keep := partition.New(partition.Config{Tables: []typed.Table{press}, Retention: 2*day + now.Sub(today)/2}, pool, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err := keep.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	got = wherePress(t, pool)
	for d := 1; d <= 5; d++ {
		name := partition.PartitionName(press.Name, today.Add(-time.Duration(d)*day))
		if _, kept := got[name]; kept != (d <= 2) {
			t.Errorf("%s (%d days ago) kept %v, want %v", name, d, kept, d <= 2)
		}
	}
	if _, ok := got["ancient"]; ok {
		t.Error("a year-old row in the default partition survived the retention")
	}
	if ps := pressPartitions(t, pool); len(ps) != 7 {
		t.Errorf("partitions %v: want the default, 2 past days and 4 from today", ps)
	}
}

// A typed table that does not exist fails the pass with its name, and
// readings' partitions are made all the same.
func TestIntegrationTypedTableMissing(t *testing.T) {
	pool := open(t)
	m := partition.New(partition.Config{Tables: []typed.Table{pressTable()}, Retention: 30 * 24 * time.Hour}, pool, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	err := m.Maintain(t.Context())
	if err == nil || !strings.Contains(err.Error(), "partitions of press_telemetry: the table does not exist (firehose migrate --config FILE creates it)") {
		t.Errorf("%v: want the missing table named", err)
	}
	if ps := partitions(t, pool); len(ps) != 5 {
		t.Errorf("readings' partitions %v: want the default and 4 days", ps)
	}
}
