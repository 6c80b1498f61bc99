package bridge

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"firehose/ingest"
	"firehose/typed"
)

// TestTargets: a batch's rows are grouped by table and column list,
// readings first, then the typed tables by name, each in batch order.
func TestTargets(t *testing.T) {
	shape := func(table string, cols ...string) *typed.Shape {
		s := &typed.Shape{Table: table}
		for _, c := range cols {
			s.Columns = append(s.Columns, typed.Column{Name: c, Type: typed.Text})
		}
		return s
	}
	row := func(s *typed.Shape) *entry {
		return &entry{r: ingest.Reading{Row: &typed.Row{Shape: s, Values: make([]typed.Value, len(s.Columns))}}}
	}
	b, a1, a2 := shape("b", "x"), shape("a", "x", "y"), shape("a", "x")
	rows := []*entry{row(b), {}, row(a1), row(a2), {}, row(&typed.Shape{Table: "a", Columns: a1.Columns}), row(b)}
	for i, e := range rows {
		e.pos = i
	}
	var got []string
	for _, tg := range targets(rows) {
		got = append(got, fmt.Sprint(tg.name, tg.columns, len(tg.rows), tg.rows[0].pos))
	}
	want := []string{"readings[] 2 1", "a[x] 1 3", "a[x y] 2 2", "b[x] 2 0"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("targets %q, want %q", got, want)
	}
	if tg := targets([]*entry{{}, {}}); len(tg) != 1 || tg[0].typed() || len(tg[0].rows) != 2 {
		t.Errorf("a batch of readings: %+v, want one target", tg)
	}
	if tg := targets(nil); tg != nil {
		t.Errorf("no rows: %+v", tg)
	}
}

// TestClassify: which COPY errors refuse a row, refuse a typed table's
// rows at once, or leave the batch to be retried.
func TestClassify(t *testing.T) {
	plain, tbl := &target{name: "readings"}, &target{name: "t", columns: []string{"x"}}
	pg := func(code, msg string) error { return fmt.Errorf("copy: %w", &pgconn.PgError{Code: code, Message: msg}) }
	for _, tt := range []struct {
		name string
		t    *target
		err  error
		want refusal
	}{
		{"check violation", tbl, pg("23514", "check"), rowRefusal},
		{"bad utf-8", plain, pg("22021", "bad"), rowRefusal},
		{"value pgx cannot encode", tbl, pg("57014", "COPY from stdin failed: unable to encode \"s\" into binary format for int4 (OID 23)"), rowRefusal},
		{"statement timeout", tbl, pg("57014", "canceling statement due to statement timeout"), transient},
		{"typed table missing", tbl, pg("42P01", "relation does not exist"), tableRefusal},
		{"typed column missing", tbl, pg("42703", "column does not exist"), tableRefusal},
		{"readings missing", plain, pg("42P01", "relation does not exist"), transient},
		{"lock timeout", tbl, pg("55P03", "lock timeout"), transient},
		{"connection lost", tbl, errors.New("unexpected EOF"), transient},
	} {
		if got := classify(tt.t, tt.err); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestPGValue: each column type's Go value, NULL as nil, an empty array not
// NULL, a numeric that does not parse an error.
func TestPGValue(t *testing.T) {
	for _, tt := range []struct {
		typ  typed.Type
		v    typed.Value
		want string
	}{
		{typed.Text, typed.Value{Str: "a"}, "string a"},
		{typed.Boolean, typed.Value{Bool: true}, "bool true"},
		{typed.Smallint, typed.Value{Int: 70000}, "int64 70000"},
		{typed.Real, typed.Value{Float: 1.5}, "float32 1.5"},
		{typed.Double, typed.Value{Float: 1.5}, "float64 1.5"},
		{typed.JSONB, typed.Value{Str: `{"a":1}`}, `string {"a":1}`},
		{typed.DoubleArray, typed.Value{}, "[]float64 []"},
		{typed.TextArray, typed.StrsValue([]string{"x"}), "[]string [x]"},
		{typed.Integer, typed.Value{Null: true, Int: 3}, "<nil> <nil>"},
	} {
		v, err := pgValue(tt.typ, &tt.v)
		if got := fmt.Sprintf("%T %v", v, v); err != nil || got != tt.want {
			t.Errorf("%s: %s, %v; want %s", tt.typ, got, err, tt.want)
		}
	}
	if v, err := pgValue(typed.Numeric, &typed.Value{Str: "-1.25e3"}); err != nil || fmt.Sprintf("%T", v) != "pgtype.Numeric" {
		t.Errorf("numeric: %T, %v", v, err)
	}
	if _, err := pgValue(typed.Numeric, &typed.Value{Str: "12x"}); err == nil {
		t.Error("a numeric that does not parse: no error")
	}
}

// TestAppendBatchChecksRows: in a batch entry the rows of a shape COPY can
// take decode, each of its own shape, and every row of a shape it cannot
// (a column name that is not an identifier) is rejected, whichever came
// first and however often it comes back.
func TestAppendBatchChecksRows(t *testing.T) {
	good := &typed.Shape{Table: "t", Columns: []typed.Column{{Name: "a", Type: typed.Integer}}}
	bad := &typed.Shape{Table: "t", Columns: []typed.Column{{Name: "A", Type: typed.Integer}}}
	other := &typed.Shape{Table: "u", Columns: []typed.Column{{Name: "b", Type: typed.Bigint}}}
	shapes := []*typed.Shape{good, bad, good, good, bad, other, bad, good}
	rs := make([]ingest.Reading, len(shapes))
	for i, s := range shapes {
		rs[i] = ingest.Reading{DeviceID: "d", Time: time.Unix(1, 0), ReceivedAt: time.Unix(1, 0),
			Row: &typed.Row{Shape: s, Values: []typed.Value{{Int: int64(i)}}}}
	}
	buf, _ := appendDecoded(nil, benchEntry(rs))
	if len(buf) != len(shapes) {
		t.Fatalf("%d entries, want %d", len(buf), len(shapes))
	}
	for i, e := range buf {
		switch {
		case shapes[i] == bad:
			if !errors.Is(e.bad, ingest.ErrCorruptEntry) {
				t.Errorf("row %d (bad shape): %v, want rejected as corrupt", i, e.bad)
			}
		case e.bad != nil:
			t.Errorf("row %d: %v", i, e.bad)
		case e.r.Row.Shape.Table != shapes[i].Table || e.r.Row.Shape.Columns[0] != shapes[i].Columns[0] || e.r.Row.Values[0].Int != int64(i):
			t.Errorf("row %d: %+v %+v", i, *e.r.Row.Shape, e.r.Row.Values)
		}
	}
}
