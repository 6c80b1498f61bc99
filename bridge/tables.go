package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"firehose/ingest"
	"firehose/typed"
)

// A batch's rows go to several tables: its readings rows to readings, each
// typed row (ingest.Reading.Row) to the table it names. A target is one
// COPY of the batch: a table, the columns the COPY fills, and its rows. All
// of a batch's targets commit in one transaction with the shard's
// checkpoint.

// readingsName is the table readings rows go to, as metrics name it.
const readingsName = "readings"

// target is the rows of a batch bound for one table with one column list.
type target struct {
	name    string   // the table
	columns []string // a typed table's COPY columns; nil for readings (columnsFor)
	rows    []*entry
}

// typed reports whether t is a typed table's.
func (t *target) typed() bool { return t.columns != nil }

// targets groups rows (sorted as commit wants them in each table) by table
// and column list: readings first, then the typed tables by name and
// column list, so that every bridge takes the tables in the same order.
func targets(rows []*entry) []*target {
	if !slices.ContainsFunc(rows, func(e *entry) bool { return e.r.Row != nil }) {
		if len(rows) == 0 {
			return nil
		}
		return []*target{{name: readingsName, rows: rows}} // as before typed tables
	}
	var out []*target
	var plain *target
	byKey := map[string]*target{}
	// Decoded rows of one shape share their *Shape (typed.DecodeRow): the
	// key is built once a shape, not once a row.
	byShape := map[*typed.Shape]*target{}
	for _, e := range rows {
		row := e.r.Row
		if row == nil {
			if plain == nil {
				plain = &target{name: readingsName}
			}
			plain.rows = append(plain.rows, e)
			continue
		}
		t, ok := byShape[row.Shape]
		if !ok {
			key := shapeKey(row.Shape)
			if t, ok = byKey[key]; !ok {
				t = &target{name: row.Shape.Table, columns: make([]string, len(row.Shape.Columns))}
				for i, c := range row.Shape.Columns {
					t.columns[i] = c.Name
				}
				byKey[key] = t
				out = append(out, t)
			}
			byShape[row.Shape] = t
		}
		t.rows = append(t.rows, e)
	}
	slices.SortFunc(out, func(a, b *target) int {
		return cmp.Or(strings.Compare(a.name, b.name), slices.Compare(a.columns, b.columns))
	})
	if plain != nil {
		out = append([]*target{plain}, out...)
	}
	return out
}

// shapeKey names a table and column list: rows of one rule share it.
func shapeKey(s *typed.Shape) string {
	var b strings.Builder
	b.WriteString(s.Table)
	for _, c := range s.Columns {
		b.WriteByte(0)
		b.WriteString(c.Name)
	}
	return b.String()
}

// copier is what a COPY runs on: a transaction or a savepoint of one.
type copier interface {
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
	// Conn is the transaction's connection (copyTyped).
	Conn() *pgx.Conn
}

// copyRows COPYs rows, all of target t, into t's table, and returns
// PostgreSQL's error as it is (see refusedAs, copyErr).
func copyRows(ctx context.Context, tx copier, t *target, rows []*entry) error {
	if t.typed() {
		return copyTyped(ctx, tx, t, rows)
	}
	_, err := tx.CopyFrom(ctx, readingsTable, columnsFor(rows), newRowSource(rows))
	return err
}

// copyErr is the error of a COPY of n rows into t that failed for a reason
// not theirs: the batch is retried.
func copyErr(t *target, n int, err error) error {
	return fmt.Errorf("copy %d rows into %s: %w", n, t.name, err)
}

// refusedAs is the error a row of t refused by PostgreSQL is recorded
// with in readings_rejected: PostgreSQL's, and for a typed row the table
// it was refused by (the row's body names it too).
func refusedAs(t *target, err error) error {
	if t.typed() {
		return fmt.Errorf("table %s: %w", t.name, err)
	}
	return err
}

// refusal is how a COPY's error concerns its rows.
type refusal int

const (
	// transient: not the rows' fault (a connection lost, a lock timeout,
	// readings missing): the batch is retried as it is.
	transient refusal = iota
	// rowRefusal: PostgreSQL refused a row: isolate it.
	rowRefusal
	// tableRefusal: a typed table, or one of the COPY's columns, does not
	// exist (42P01, 42703: not created yet, dropped or altered by hand):
	// every row of the COPY is refused alike, without isolating them.
	tableRefusal
)

// classify says how err, from a COPY into target t, concerns its rows.
func classify(t *target, err error) refusal {
	if rowRefused(err) || encodeRefused(err) {
		return rowRefusal
	}
	var pe *pgconn.PgError
	if t.typed() && errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "42703") {
		return tableRefusal
	}
	return transient
}

// encodeRefused reports whether a COPY failed because a value could not be
// encoded for its column on this side (a typed table's column whose type
// was changed by hand, a numeric that does not parse): typedReader's Read
// fails with "unable to encode column ...", pgconn ends the COPY with
// CopyFail quoting it, and PostgreSQL answers 57014 with that text (pgx's
// CopyFrom says "unable to encode" too). A cancelled statement
// (statement_timeout, pg_cancel_backend) is 57014 too, without that text,
// and transient.
func encodeRefused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "57014" && strings.Contains(pe.Message, "unable to encode")
}

// pgValue is v, of a column of type t, as a Go value pgx encodes for that
// type (and, where the table's column was changed to a compatible type, for
// that one): nil for NULL; the integers as int64, so that pgx checks the
// range of the table's column. copyTyped encodes most values itself and
// leaves the others to pgx as pgValue has them (appendViaPgx).
func pgValue(t typed.Type, v *typed.Value) (any, error) {
	if v.Null {
		return nil, nil
	}
	switch t {
	case typed.Text:
		return v.Str, nil
	case typed.Boolean:
		return v.Bool, nil
	case typed.Smallint, typed.Integer, typed.Bigint:
		return v.Int, nil
	case typed.Real:
		return float32(v.Float), nil
	case typed.Double:
		return v.Float, nil
	case typed.Numeric:
		var n pgtype.Numeric
		if err := n.ScanScientific(v.Str); err != nil {
			return nil, fmt.Errorf("numeric %q: %w", v.Str, err)
		}
		return n, nil
	case typed.Timestamptz:
		return v.Time(), nil
	case typed.JSONB:
		return v.Str, nil // pgx sends a string to a jsonb column as it is: JSON text
	case typed.DoubleArray:
		if v.Floats() == nil {
			return []float64{}, nil // not NULL: an empty array
		}
		return v.Floats(), nil
	case typed.TextArray:
		if v.Strs() == nil {
			return []string{}, nil
		}
		return v.Strs(), nil
	}
	return nil, fmt.Errorf("unknown column type %d", t)
}

// decodeItem decodes one reading's body in encoding version and checks a
// typed row's frame (ingest.CheckRow: a row COPY cannot take is rejected
// when read, not retried).
func decodeItem(version, body string) (ingest.Reading, error) {
	return decodeChecked(version, body, nil)
}

// decodeChecked is decodeItem, for the readings of one batch entry: checked
// (when not nil) holds the shape of a row CheckRow passed. Decoded rows of
// one shape share their *Shape, which no one changes, and hold a value a
// column (typed.DecodeRow): a row of the shape checked before is not checked
// again, and one checked is recorded.
func decodeChecked(version, body string, checked **typed.Shape) (ingest.Reading, error) {
	r, err := ingest.Decode(version, body)
	if err != nil || r.Row == nil || checked != nil && r.Row.Shape == *checked {
		return r, err
	}
	if err := ingest.CheckRow(r.Row); err != nil {
		return ingest.Reading{}, fmt.Errorf("%w: %w", ingest.ErrCorruptEntry, err)
	}
	if checked != nil {
		*checked = r.Row.Shape
	}
	return r, nil
}
