package schema_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"firehose/internal/testenv"
	"firehose/schema"
	"firehose/typed"
)

func press() typed.Table {
	return typed.Table{Name: "press_telemetry", Rule: "press", TimeColumn: "time",
		Columns: []typed.Column{
			{Name: "device_id", Type: typed.Text},
			{Name: "site", Type: typed.Text},
			{Name: "time", Type: typed.Timestamptz},
			{Name: "received_at", Type: typed.Timestamptz},
			{Name: "msg_id", Type: typed.Text},
			{Name: "temp", Type: typed.Real},
			{Name: "rpm", Type: typed.Integer, NotNull: true},
			{Name: "cost", Type: typed.Numeric},
			{Name: "extra", Type: typed.JSONB},
			{Name: "curve", Type: typed.DoubleArray},
			{Name: "tags", Type: typed.TextArray},
		},
		Indexes: []typed.Index{{Columns: []string{"device_id", "time"}}, {Columns: []string{"msg_id"}, Unique: true}},
	}
}

func pump() typed.Table {
	return typed.Table{Name: "pump_status", Rule: "pump", TimeColumn: "ts",
		Columns: []typed.Column{{Name: "ts", Type: typed.Timestamptz}, {Name: "state", Type: typed.Text}, {Name: "alarm", Type: typed.Boolean}}}
}

func pool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(t.Context(), testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// syncBuffer is a log destination the test reads while EnsureTables writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func ensure(t *testing.T, db *pgxpool.Pool, tables ...typed.Table) (schema.Changes, error) {
	t.Helper()
	return schema.EnsureTables(t.Context(), db, tables, discard())
}

func strs(t *testing.T, db *pgxpool.Pool, sql string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(t.Context(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func exec(t *testing.T, db *pgxpool.Pool, sql string) {
	t.Helper()
	if _, err := db.Exec(t.Context(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// A table created from scratch: its columns, types and NOT NULLs, its range
// partitioning by the time column with a default partition, its indexes
// (the unique one holding the time column); a second run changes nothing.
func TestIntegrationEnsureTablesCreates(t *testing.T) {
	db := pool(t)
	ch, err := ensure(t, db, press(), pump(), press())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Created, []string{"press_telemetry", "pump_status"}) || ch.Added != nil || ch.Indexed != nil {
		t.Errorf("changes %+v: want press_telemetry and pump_status created", ch)
	}
	cols := strs(t, db, `SELECT attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' NOT NULL' ELSE '' END
		FROM pg_attribute WHERE attrelid = 'press_telemetry'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`)
	want := []string{"device_id text", "site text", "time timestamp with time zone NOT NULL", "received_at timestamp with time zone",
		"msg_id text", "temp real", "rpm integer NOT NULL", "cost numeric", "extra jsonb", "curve double precision[]", "tags text[]"}
	if !slices.Equal(cols, want) {
		t.Errorf("columns\n%q, want\n%q", cols, want)
	}
	if got := strs(t, db, "SELECT pg_get_partkeydef('press_telemetry'::regclass)"); !slices.Equal(got, []string{"RANGE (\"time\")"}) {
		t.Errorf("partition key %q", got)
	}
	if got := strs(t, db, "SELECT inhrelid::regclass::text || ' ' || pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits JOIN pg_class c ON c.oid = inhrelid WHERE inhparent = 'press_telemetry'::regclass"); !slices.Equal(got, []string{"press_telemetry_default DEFAULT"}) {
		t.Errorf("partitions %q: want the default one", got)
	}
	idx := strs(t, db, "SELECT indexdef FROM pg_indexes WHERE tablename = 'press_telemetry' ORDER BY indexname")
	wantIdx := []string{
		`CREATE INDEX press_telemetry_device_id_time_idx ON ONLY public.press_telemetry USING btree (device_id, "time")`,
		`CREATE UNIQUE INDEX press_telemetry_msg_id_time_key ON ONLY public.press_telemetry USING btree (msg_id, "time")`,
	}
	if !slices.Equal(idx, wantIdx) {
		t.Errorf("indexes\n%q, want\n%q", idx, wantIdx)
	}
	// The constraints hold: no NULL time, msg_id unique per time.
	if _, err := db.Exec(t.Context(), "INSERT INTO press_telemetry (rpm, msg_id) VALUES (1, 'a')"); err == nil {
		t.Error("a row without time was stored")
	}
	exec(t, db, "INSERT INTO press_telemetry (time, rpm, msg_id) VALUES ('2026-01-01Z', 1, 'a')")
	if _, err := db.Exec(t.Context(), "INSERT INTO press_telemetry (time, rpm, msg_id) VALUES ('2026-01-01Z', 2, 'a')"); err == nil {
		t.Error("a second row of msg_id a at the same time was stored")
	}
	ch, err = ensure(t, db, press(), pump())
	if err != nil || ch.Created != nil || ch.Added != nil || ch.Indexed != nil || ch.Kept != nil {
		t.Errorf("second run: %+v, %v: want nothing to do", ch, err)
	}
	if err := schema.CheckTables(t.Context(), db, []typed.Table{press(), pump()}); err != nil {
		t.Errorf("check: %v", err)
	}
}

// A column the rule adds is added while a writer holds the table: the ALTER
// waits at most the lock timeout, gives way (a second writer meanwhile is
// not blocked until the first one ends), retries, and succeeds once the
// writer commits. A new index is built on every partition.
func TestIntegrationEnsureTablesAddsColumnUnderLock(t *testing.T) {
	db := pool(t)
	if _, err := ensure(t, db, press()); err != nil {
		t.Fatal(err)
	}
	exec(t, db, `CREATE TABLE press_telemetry_p20260101 PARTITION OF press_telemetry FOR VALUES FROM ('2026-01-01Z') TO ('2026-01-02Z')`)
	exec(t, db, "INSERT INTO press_telemetry (time, rpm) VALUES ('2026-01-01T10:00Z', 1), ('2027-01-01Z', 2)")
	restore := schema.SetLockRetry(300*time.Millisecond, 100*time.Millisecond)
	t.Cleanup(restore)

	holder, err := db.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(context.Background()) //nolint:errcheck // committed below
	if _, err := holder.Exec(t.Context(), "INSERT INTO press_telemetry (time, rpm) VALUES (now(), 3)"); err != nil {
		t.Fatal(err)
	}
	rule := press()
	rule.Columns = append(rule.Columns, typed.Column{Name: "pressure", Type: typed.Double})
	rule.Indexes = append(rule.Indexes, typed.Index{Columns: []string{"site", "time"}})
	var logs syncBuffer
	type result struct {
		ch  schema.Changes
		err error
	}
	done := make(chan result, 1)
	go func() {
		ch, err := schema.EnsureTables(t.Context(), db, []typed.Table{rule}, slog.New(slog.NewTextHandler(&logs, nil)))
		done <- result{ch, err}
	}()
	testenv.Await(t, func() bool { return strings.Count(logs.String(), "lock not granted") >= 2 }, "the ALTER gave way twice; log:\n%s", &logs)
	// Meanwhile another writer gets through (the ALTER is not queued ahead of it for long).
	if _, err := db.Exec(t.Context(), "INSERT INTO press_telemetry (time, rpm) VALUES (now(), 4)"); err != nil {
		t.Fatal(err)
	}
	if err := holder.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("ensure: %v\nlog:\n%s", r.err, &logs)
	}
	if !slices.Equal(r.ch.Added, []string{"press_telemetry.pressure double precision"}) ||
		!slices.Equal(r.ch.Indexed, []string{"press_telemetry_site_time_idx"}) {
		t.Errorf("changes %+v", r.ch)
	}
	if n := testenv.QueryInt(t, db.Config().ConnString(), "SELECT count(*) FROM press_telemetry WHERE pressure IS NULL"); n != 4 {
		t.Errorf("%d rows with pressure NULL, want all 4", n)
	}
	valid := strs(t, db, `SELECT c.relname || ' ' || x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
		WHERE c.relname LIKE '%site%' ORDER BY 1`)
	if len(valid) != 3 || slices.ContainsFunc(valid, func(s string) bool { return !strings.HasSuffix(s, " true") }) {
		t.Errorf("site indexes %q: want the parent's and both partitions', valid", valid)
	}
	if err := schema.CheckTables(t.Context(), db, []typed.Table{rule}); err != nil {
		t.Errorf("check: %v", err)
	}
}

// Differences that are not safe to apply are refused with the table, the
// column and what to do; the other tables are still created.
func TestIntegrationEnsureTablesRefuses(t *testing.T) {
	byHand := func(sql string) func(*testing.T, *pgxpool.Pool) {
		return func(t *testing.T, db *pgxpool.Pool) { exec(t, db, sql) }
	}
	created := func(t *testing.T, db *pgxpool.Pool) {
		if _, err := ensure(t, db, press()); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		before func(*testing.T, *pgxpool.Pool)
		rule   func(*typed.Table)
		want   []string
	}{
		{
			name:   "type change",
			before: created,
			rule:   func(t *typed.Table) { t.Columns[6].Type = typed.Bigint },
			want:   []string{"table press_telemetry (rule press), column rpm: integer in the table, bigint in the rule", `ALTER TABLE "press_telemetry" ALTER COLUMN "rpm" TYPE bigint`},
		},
		{
			name:   "NOT NULL column dropped from the rule",
			before: created,
			rule:   func(t *typed.Table) { t.Columns = slices.Delete(t.Columns, 6, 7) },
			want:   []string{"column rpm: NOT NULL in the table, but no column of the rule", `ALTER COLUMN "rpm" DROP NOT NULL`},
		},
		{
			name:   "partitioned by another column",
			before: byHand(`CREATE TABLE press_telemetry (time timestamptz NOT NULL, received_at timestamptz NOT NULL) PARTITION BY RANGE (received_at)`),
			want:   []string{"table press_telemetry (rule press): the table is partitioned by RANGE (received_at), not by RANGE (time)", `RENAME TO press_telemetry_old`},
		},
		{
			name:   "not partitioned",
			before: byHand(`CREATE TABLE press_telemetry (time timestamptz NOT NULL)`),
			want:   []string{"table press_telemetry (rule press): the table exists but is not partitioned", "RENAME TO"},
		},
		{
			name:   "time column nullable",
			before: byHand(`CREATE TABLE press_telemetry (time timestamptz) PARTITION BY RANGE (time)`),
			want:   []string{"column time: the time column is nullable in the table", `ALTER COLUMN "time" SET NOT NULL`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := pool(t)
			tc.before(t, db)
			rule := press()
			if tc.rule != nil {
				tc.rule(&rule)
			}
			ch, err := ensure(t, db, rule, pump())
			if !errors.Is(err, schema.ErrUnsafeChange) {
				t.Fatalf("%+v, %v: want ErrUnsafeChange", ch, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if !slices.Equal(ch.Created, []string{"pump_status"}) {
				t.Errorf("created %q: want pump_status still", ch.Created)
			}
			if err := schema.CheckTables(t.Context(), db, []typed.Table{rule}); !errors.Is(err, schema.ErrUnsafeChange) {
				t.Errorf("check: %v, want ErrUnsafeChange", err)
			}
		})
	}
}

// A nullable column the rule no longer names is left alone and reported.
func TestIntegrationEnsureTablesKeepsExtraColumns(t *testing.T) {
	db := pool(t)
	if _, err := ensure(t, db, press()); err != nil {
		t.Fatal(err)
	}
	exec(t, db, "ALTER TABLE press_telemetry ADD COLUMN note text, ADD COLUMN n timestamptz NOT NULL DEFAULT now()")
	rule := press()
	rule.Columns = slices.Delete(rule.Columns, 5, 6) // temp
	ch, err := ensure(t, db, rule)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Kept, []string{"press_telemetry.temp", "press_telemetry.note", "press_telemetry.n"}) {
		t.Errorf("kept %q", ch.Kept)
	}
	if err := schema.CheckTables(t.Context(), db, []typed.Table{rule}); err != nil {
		t.Errorf("check: %v", err)
	}
}

// CheckTables sees a missing table, and the hand changes the rule
// contradicts, without changing anything.
func TestIntegrationCheckTables(t *testing.T) {
	db := pool(t)
	tables := []typed.Table{press()}
	err := schema.CheckTables(t.Context(), db, tables)
	if !errors.Is(err, schema.ErrNotMigrated) || !strings.Contains(err.Error(), "table press_telemetry (rule press): the table does not exist; run firehose migrate --config FILE") {
		t.Errorf("missing table: %v", err)
	}
	if _, err := ensure(t, db, tables...); err != nil {
		t.Fatal(err)
	}
	exec(t, db, "ALTER TABLE press_telemetry ALTER COLUMN temp TYPE double precision")
	exec(t, db, "ALTER TABLE press_telemetry DROP COLUMN site")
	exec(t, db, "DROP INDEX press_telemetry_msg_id_time_key")
	err = schema.CheckTables(t.Context(), db, tables)
	for _, w := range []string{
		"column temp: double precision in the table, real in the rule",
		"column site: the table has no such column (text); run firehose migrate",
		"index (msg_id, time) is missing; run firehose migrate",
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("check: %v: want %q", err, w)
		}
	}
	if !errors.Is(err, schema.ErrUnsafeChange) || !errors.Is(err, schema.ErrNotMigrated) {
		t.Errorf("check: %v: want both ErrUnsafeChange and ErrNotMigrated", err)
	}
	if got := strs(t, db, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'press_telemetry'::regclass AND attname = 'temp'"); got[0] != "double precision" {
		t.Errorf("check changed temp to %s", got[0])
	}
}

// Concurrent migrations of the same tables: one creates each, none fails.
func TestIntegrationEnsureTablesConcurrent(t *testing.T) {
	db := pool(t)
	var wg sync.WaitGroup
	res := make([]schema.Changes, 4)
	errs := make([]error, 4)
	for i := range res {
		wg.Go(func() {
			res[i], errs[i] = schema.EnsureTables(t.Context(), db, []typed.Table{press(), pump()}, discard())
		})
	}
	wg.Wait()
	created := 0
	for i := range res {
		if errs[i] != nil {
			t.Errorf("run %d: %v", i, errs[i])
		}
		created += len(res[i].Created)
	}
	if created != 2 {
		t.Errorf("%d tables created in all, want 2", created)
	}
}
