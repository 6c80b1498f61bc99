package bridge

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/typed"
)

// pgxSource feeds typed rows to pgx's CopyFrom, each value as pgValue has
// it: how typed rows were COPYed before copyTyped, the reference here.
type pgxSource struct {
	rows []*entry
	i    int
}

func (s *pgxSource) Next() bool { s.i++; return s.i <= len(s.rows) }
func (s *pgxSource) Err() error { return nil }
func (s *pgxSource) Values() ([]any, error) {
	row := s.rows[s.i-1].r.Row
	vals := make([]any, len(row.Values))
	for j, c := range row.Shape.Columns {
		v, err := pgValue(c.Type, &row.Values[j])
		if err != nil {
			return nil, fmt.Errorf("unable to encode column %s: %w", c.Name, err)
		}
		vals[j] = v
	}
	return vals, nil
}

// everyColumn is a column of each type and the values its rows take, NULL
// among them.
var everyColumn = []struct {
	name string
	typ  typed.Type
	vals []typed.Value
}{
	{"id", typed.Bigint, nil}, // the row's number
	{"s", typed.Text, []typed.Value{{Str: "berlin"}, {Str: ""}, {Str: "ünï ✓ 'q' \"d\" \\ \t"}, {Null: true}}},
	{"ok", typed.Boolean, []typed.Value{{Bool: true}, {}, {Null: true}}},
	{"n", typed.Smallint, []typed.Value{{Int: math.MinInt16}, {Int: math.MaxInt16}, {Int: 0}, {Null: true}, {Int: -7}}},
	{"i", typed.Integer, []typed.Value{{Int: math.MinInt32}, {Int: math.MaxInt32}, {Int: 1200}, {Null: true}}},
	{"big", typed.Bigint, []typed.Value{{Int: math.MinInt64}, {Int: math.MaxInt64}, {Int: -1}, {Null: true}}},
	{"r", typed.Real, []typed.Value{{Float: 21.5}, {Float: -0.1}, {Float: 3.4e38}, {Float: 1.4e-45}, {Null: true}, {Float: math.Copysign(0, -1)}}},
	{"d", typed.Double, []typed.Value{{Float: 3.075}, {Float: -1e308}, {Float: 5e-324}, {Float: 1.0 / 3}, {Null: true}}},
	{"num", typed.Numeric, []typed.Value{{Str: "12.50"}, {Str: "-0.0015"}, {Str: "1e3"}, {Str: "1E-3"}, {Str: "0"}, {Str: "-0.000"},
		{Str: "123456789012345678901234567890.000000000000000000001"}, {Str: "1e1000"}, {Str: "-1.5e-1000"}, {Str: "10000.0001"},
		{Str: "0.00001"}, {Str: "9999.9999"}, {Null: true}, {Str: "5e4"}, {Str: "12345678e-4"}}},
	{"t", typed.Timestamptz, []typed.Value{typed.TimeValue(time.Date(2026, 12, 5, 10, 0, 0, 123456789, time.UTC)),
		typed.TimeValue(time.Date(1999, 12, 31, 23, 59, 59, 999999500, time.UTC)), typed.TimeValue(time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC)),
		typed.TimeValue(time.Date(1678, 1, 2, 0, 0, 0, 1001, time.UTC)), typed.TimeValue(time.Date(2261, 12, 31, 23, 59, 59, 999999000, time.UTC)),
		{Null: true}}},
	{"j", typed.JSONB, []typed.Value{{Str: `{"a":1,"b":[true,null,"x"]}`}, {Str: `[]`}, {Str: `"ü"`}, {Str: `1.50`}, {Null: true}}},
	{"fs", typed.DoubleArray, []typed.Value{typed.FloatsValue([]float64{1, 2.5, -1e-300}), typed.FloatsValue([]float64{}), {}, {Null: true}}},
	{"ts", typed.TextArray, []typed.Value{typed.StrsValue([]string{"a", "", "NULL", "x,y", `"q"`}), typed.StrsValue([]string{}), {}, {Null: true}}},
}

// everyTypeRows are n rows of everyColumn's shape in table, row i taking
// each column's value i modulo its count.
func everyRows(table string, n int) []*entry {
	shape := &typed.Shape{Table: table}
	for _, c := range everyColumn {
		shape.Columns = append(shape.Columns, typed.Column{Name: c.name, Type: c.typ})
	}
	rows := make([]*entry, n)
	for i := range rows {
		vals := make([]typed.Value, len(everyColumn))
		vals[0].Int = int64(i)
		for j, c := range everyColumn[1:] {
			vals[j+1] = c.vals[i%len(c.vals)]
		}
		rows[i] = &entry{r: ingest.Reading{Row: &typed.Row{Shape: shape, Values: vals}}}
	}
	return rows
}

// TestIntegrationTypedCopyAsPgx: rows of every type, COPYed by copyTyped,
// are in PostgreSQL what pgx's CopyFrom of the same values makes of them,
// value for value, into tables of the rules' types and into tables whose
// columns were changed by hand to other types pgx can send them as; and a
// value that fits neither is refused the same way by both.
func TestIntegrationTypedCopyAsPgx(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	ddl := func(table string, types map[string]string) string {
		var cols []string
		for _, c := range everyColumn {
			typ := c.typ.String()
			if o, ok := types[c.name]; ok {
				typ = o
			}
			cols = append(cols, fmt.Sprintf("%s %s", c.name, typ))
		}
		return fmt.Sprintf("CREATE TABLE %s (%s);", table, strings.Join(cols, ", "))
	}
	changed := map[string]string{"n": "integer", "i": "bigint", "r": "double precision", "d": "numeric", "s": "varchar(100)",
		"t": "timestamp", "j": "json", "num": "text", "big": "numeric", "fs": "numeric[]", "ts": "varchar[]"}
	for _, stmt := range []string{ddl("mine", nil), ddl("theirs", nil), ddl("mine_changed", changed), ddl("theirs_changed", changed),
		ddl("mine_refused", map[string]string{"s": "integer"}), ddl("theirs_refused", map[string]string{"s": "integer"})} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	const n = 300
	var cols []string
	for _, c := range everyColumn {
		cols = append(cols, c.name)
	}
	// inTx runs copy in a transaction, committed if it succeeds.
	inTx := func(copy func(tx pgx.Tx) error) error {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
		if err := copy(tx); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	mine := func(table string) error {
		return inTx(func(tx pgx.Tx) error {
			tg := targets(everyRows(table, n))[0]
			return copyRows(ctx, tx, tg, tg.rows)
		})
	}
	theirs := func(table string) error {
		return inTx(func(tx pgx.Tx) error {
			_, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, &pgxSource{rows: everyRows(table, n)})
			return err
		})
	}
	for _, pair := range [][2]string{{"mine", "theirs"}, {"mine_changed", "theirs_changed"}} {
		if errMine, errTheirs := mine(pair[0]), theirs(pair[1]); errMine != nil || errTheirs != nil {
			t.Fatalf("%s: copyTyped %v, pgx %v", pair[0], errMine, errTheirs)
		}
		var diff int
		var sample string
		if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), coalesce(min(a::text || ' <> ' || b::text), '')
			FROM %s a FULL JOIN %s b USING (id) WHERE a::text IS DISTINCT FROM b::text`, pair[0], pair[1])).Scan(&diff, &sample); err != nil {
			t.Fatal(err)
		}
		if diff != 0 {
			t.Errorf("%s: %d rows differ from pgx's, e.g. %s", pair[0], diff, sample)
		}
		var rows int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pair[0]).Scan(&rows); err != nil || rows != n {
			t.Errorf("%s holds %d rows (%v), want %d", pair[0], rows, err, n)
		}
	}
	// Text into an integer column: neither sends "berlin" as an integer.
	errMine, errTheirs := mine("mine_refused"), theirs("theirs_refused")
	tg := &target{name: "mine_refused", columns: cols}
	if !encodeRefused(errMine) || !encodeRefused(errTheirs) || classify(tg, errMine) != rowRefusal {
		t.Errorf("text into an integer column: copyTyped %v, pgx %v; want both refused as unable to encode", errMine, errTheirs)
	}
}
