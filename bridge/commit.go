package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"firehose/ingest"
)

var (
	readingsTable   = pgx.Identifier{"readings"}
	readingsColumns = []string{"device_id", "ts", "received_at", "reading", "payload"}
	// With a metric: a batch with a reading that names one. Without, the
	// column takes its default ('reading', ingest.DefaultMetric) and COPY
	// sends a field less per row.
	metricColumns   = []string{"device_id", "ts", "received_at", "reading", "payload", "metric"}
	rejectedTable   = pgx.Identifier{"readings_rejected"}
	rejectedColumns = []string{"stream", "entry_id", "version", "raw", "error"}
)

const upsertCheckpoint = `INSERT INTO bridge_checkpoints (stream, last_id, rows, generation, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (stream) DO UPDATE
SET last_id = EXCLUDED.last_id, rows = bridge_checkpoints.rows + EXCLUDED.rows,
    generation = EXCLUDED.generation, updated_at = now()`

type commitResult struct {
	written, decodeBad, refused int
	replayed                    int       // of written: replays of rejected entries (see replays)
	deadLetters                 int       // edge dead letters recorded in readings_rejected
	oldest                      time.Time // earliest ReceivedAt of the batch
	// tables: of written, the rows per table (readings and typed tables).
	tables map[string]int
	// missing: of refused, the rows per typed table refused because the
	// table or a column of theirs does not exist (tableRefusal).
	missing    map[string]int
	missingErr map[string]error // the first such row's error, per table
}

// landed counts the rows of t that were written (those isolate did not
// refuse) in res.tables, and those refused for want of a table or column in
// res.missing.
func (res *commitResult) landed(t *target) {
	written := 0
	for _, e := range t.rows {
		switch {
		case e.bad == nil:
			written++
		case e.missing:
			if res.missing == nil {
				res.missing, res.missingErr = map[string]int{}, map[string]error{}
			}
			res.missing[t.name]++
			if res.missingErr[t.name] == nil {
				res.missingErr[t.name] = e.bad
			}
		}
	}
	if written > 0 {
		if res.tables == nil {
			res.tables = map[string]int{}
		}
		res.tables[t.name] += written
	}
}

// commit writes the batch buf in one transaction: the good readings by COPY
// into readings, the typed rows by COPY into their tables (one COPY per
// table and column list), the bad entries into readings_rejected, and the
// checkpoint = the last buffered id. If PostgreSQL refuses a row (a data or
// constraint error, or a value that cannot be encoded for its column) the
// rows of each table are COPYed again in halves under savepoints until the
// refused rows are isolated; a typed table or column that does not exist
// refuses all the rows bound for it at once. Refused rows go to
// readings_rejected (a typed row's error names its table) and the rest
// commits. Any other error aborts the transaction and is returned: nothing
// was written.
func (s *session) commit(ctx context.Context, buf []entry) (commitResult, error) {
	var res commitResult
	good := make([]*entry, 0, len(buf))
	var bad, dead []*entry
	for i := range buf {
		e := &buf[i]
		e.pos = i
		if e.dl != nil {
			dead = append(dead, e)
			continue
		}
		if e.bad != nil {
			bad = append(bad, e)
			continue
		}
		good = append(good, e)
		if res.oldest.IsZero() || e.r.ReceivedAt.Before(res.oldest) {
			res.oldest = e.r.ReceivedAt
		}
	}
	res.decodeBad = len(bad)
	// Rows of one device next to each other (a device's readings keep their
	// stream order: ties go by position) turn the (device_id, ts) index's
	// random inserts into runs on the same leaf pages. Not SortStableFunc:
	// its in-place merge moves memory O(n log² n) times, a fifth of the
	// bridge's CPU in a drain.
	slices.SortFunc(good, func(a, b *entry) int {
		if c := strings.Compare(a.r.DeviceID, b.r.DeviceID); c != 0 {
			return c
		}
		return cmp.Compare(a.pos, b.pos)
	})
	tgts := targets(good)

	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("begin: %w", err)
	}
	defer func() { tx.Rollback(ctx) }() //nolint:errcheck // no-op after Commit

	var refused []*entry
	for _, t := range tgts {
		err := copyRows(ctx, tx, t, t.rows)
		if err == nil {
			continue
		}
		if classify(t, err) == transient {
			return res, copyErr(t, len(t.rows), err)
		}
		// The transaction is aborted: start again and isolate the bad rows,
		// table by table.
		if err := tx.Rollback(ctx); err != nil {
			return res, fmt.Errorf("roll back refused batch: %w", err)
		}
		if tx, err = s.conn.Begin(ctx); err != nil {
			return res, fmt.Errorf("begin: %w", err)
		}
		if refused, err = isolateAll(ctx, tx, tgts); err != nil {
			return res, err
		}
		bad = append(bad, refused...)
		break
	}
	for _, t := range tgts {
		res.landed(t)
	}
	if bad, err = s.replays(ctx, tx, bad, &res); err != nil {
		return res, err
	}
	if len(bad) > 0 {
		if _, err := tx.CopyFrom(ctx, rejectedTable, rejectedColumns, &rejectSource{stream: s.key, rows: bad}); err != nil {
			return res, fmt.Errorf("record %d rejected entries: %w", len(bad), err)
		}
	}
	if len(dead) > 0 {
		if _, err := tx.CopyFrom(ctx, rejectedTable, deadLetterColumns, &deadLetterSource{stream: s.key, rows: dead}); err != nil {
			return res, fmt.Errorf("record %d edge dead letters: %w", len(dead), err)
		}
	}
	written := len(good) - len(refused) + res.replayed
	if _, err := tx.Exec(ctx, upsertCheckpoint, s.key, s.cursor.String(), written, s.gen); err != nil {
		return res, fmt.Errorf("write checkpoint: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("commit: %w", err)
	}
	res.written, res.refused, res.deadLetters = written, len(refused), len(dead)
	return res, nil
}

// isolateAll isolates the refused rows of every target (see isolate), in
// order, and returns them.
func isolateAll(ctx context.Context, tx pgx.Tx, tgts []*target) ([]*entry, error) {
	var refused []*entry
	for _, t := range tgts {
		r, err := isolate(ctx, tx, t, t.rows)
		if err != nil {
			return nil, err
		}
		refused = append(refused, r...)
	}
	return refused, nil
}

// isolate COPYs rows of target t under a savepoint; when PostgreSQL refuses
// a row it splits the rows in halves and recurses, so k bad rows among n
// cost about 2k·log2(n) COPYs. A typed table or column that does not exist
// refuses every row at once. It returns the refused rows, each with its
// error set (naming a typed row's table).
func isolate(ctx context.Context, tx pgx.Tx, t *target, rows []*entry) ([]*entry, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	err = copyRows(ctx, sp, t, rows)
	if err == nil {
		if err := sp.Commit(ctx); err != nil {
			return nil, fmt.Errorf("release savepoint: %w", err)
		}
		return nil, nil
	}
	if rerr := sp.Rollback(ctx); rerr != nil {
		return nil, fmt.Errorf("roll back to savepoint: %w", rerr)
	}
	switch classify(t, err) {
	case transient:
		return nil, copyErr(t, len(rows), err)
	case tableRefusal:
		for _, e := range rows {
			e.bad, e.missing = refusedAs(t, err), true
		}
		return rows, nil
	}
	if len(rows) == 1 {
		rows[0].bad = refusedAs(t, err)
		return rows, nil
	}
	mid := len(rows) / 2
	a, err := isolate(ctx, tx, t, rows[:mid])
	if err != nil {
		return nil, err
	}
	b, err := isolate(ctx, tx, t, rows[mid:])
	if err != nil {
		return nil, err
	}
	return append(a, b...), nil
}

// rowRefused reports whether PostgreSQL refused the data itself (SQLSTATE
// class 22 data exception, 23 integrity constraint violation, 54 program limit
// exceeded): retrying the same rows would fail again, so they are isolated.
// Everything else (connection loss, 53 insufficient resources, 57 operator
// intervention, 40 rollbacks, a missing table) is transient: the batch stays
// in the stream and is retried after a backoff.
func rowRefused(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}

// rowSource feeds decoded readings to COPY without building a [][]any.
type rowSource struct {
	rows   []*entry
	i      int
	metric bool // the metric column too (metricColumns)
	vals   [6]any
}

func newRowSource(rows []*entry) *rowSource {
	return &rowSource{rows: rows, metric: hasMetric(rows)}
}

// columnsFor is the column list of a COPY of rows.
func columnsFor(rows []*entry) []string {
	if hasMetric(rows) {
		return metricColumns
	}
	return readingsColumns
}

func hasMetric(rows []*entry) bool {
	for _, e := range rows {
		if e.r.Metric != "" {
			return true
		}
	}
	return false
}

func (s *rowSource) Next() bool {
	s.i++
	return s.i <= len(s.rows)
}

func (s *rowSource) Values() ([]any, error) {
	r := &s.rows[s.i-1].r
	s.vals[0] = r.DeviceID
	s.vals[1] = r.Time
	s.vals[2] = r.ReceivedAt
	s.vals[3] = r.Value
	s.vals[4] = r.Payload // nil []byte is NULL
	if !s.metric {
		return s.vals[:5], nil
	}
	s.vals[5] = r.Metric
	if r.Metric == "" {
		s.vals[5] = ingest.DefaultMetric
	}
	return s.vals[:], nil
}

func (s *rowSource) Err() error { return nil }

// rejectSource feeds rejected entries to COPY into readings_rejected.
type rejectSource struct {
	stream string
	rows   []*entry
	i      int
}

func (s *rejectSource) Next() bool {
	s.i++
	return s.i <= len(s.rows)
}

func (s *rejectSource) Values() ([]any, error) {
	e := s.rows[s.i-1]
	var version any // NULL when the entry named none
	if e.version != "" {
		version = cleanText(e.version, 64)
	}
	return []any{s.stream, e.entryID(), version, []byte(e.raw), cleanText(e.bad.Error(), 2000)}, nil
}

func (s *rejectSource) Err() error { return nil }

// cleanText makes s storable as PostgreSQL text: valid UTF-8, no NUL, at most
// max bytes.
func cleanText(s string, max int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\\0")
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "")
	}
	return s
}

// deadLetterColumns are the columns of an edge dead letter's row.
var deadLetterColumns = []string{"stream", "entry_id", "version", "raw", "error", "source",
	"edge_kind", "topic", "client_id", "username", "device_id", "received_at"}

// deadLetterSource feeds edge dead letters to COPY into readings_rejected:
// raw is the message's payload, the other fields each in its column.
type deadLetterSource struct {
	stream string
	rows   []*entry
	i      int
}

func (s *deadLetterSource) Next() bool {
	s.i++
	return s.i <= len(s.rows)
}

func (s *deadLetterSource) Values() ([]any, error) {
	e := s.rows[s.i-1]
	d := e.dl
	raw := d.Payload
	if raw == nil {
		raw = []byte{} // an empty message: raw is NOT NULL
	}
	return []any{s.stream, e.entryID(), e.version, raw, cleanText(d.Reason, 2000), "edge",
		cleanText(d.Kind, 64), cleanText(d.Topic, 65535), cleanText(d.ClientID, 65535), cleanText(d.Username, 65535),
		cleanText(d.Device, 65535), d.ReceivedAt}, nil
}

func (s *deadLetterSource) Err() error { return nil }
