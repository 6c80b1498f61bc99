package deadletters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"firehose/ingest"
	"firehose/stream"
	"firehose/typed"
)

// Row is a row of readings_rejected.
type Row struct {
	ID             int64
	Stream         string
	EntryID        string
	Version        *string
	Raw            []byte
	Error          string
	RejectedAt     time.Time
	ReplayedAt     *time.Time
	ReplayedStream *string
	ReplayedEntry  *string
	ReplayOf       *int64
	RefusedAs      *int64 // the row a refused replay of this one became
	// An edge dead letter's (Source "edge", see ingest.DeadLetter): Raw is
	// the message's payload; the rest of the message is in these.
	Source     string
	EdgeKind   *string
	Topic      *string
	ClientID   *string
	Username   *string
	DeviceID   *string
	ReceivedAt *time.Time
}

// Edge reports whether the row is an edge dead letter.
func (r *Row) Edge() bool { return r.Source == "edge" }

// DeadLetter is the edge dead letter the row holds.
func (r *Row) DeadLetter() ingest.DeadLetter {
	s := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	d := ingest.DeadLetter{Source: ingest.SourceMQTT, Kind: s(r.EdgeKind), Topic: s(r.Topic), ClientID: s(r.ClientID),
		Username: s(r.Username), Device: s(r.DeviceID), Reason: r.Error, Payload: r.Raw, ReceivedAt: r.RejectedAt}
	if r.ReceivedAt != nil {
		d.ReceivedAt = *r.ReceivedAt
	}
	return d
}

// Status is pending, replayed or refused_again.
func (r *Row) Status() string {
	switch {
	case r.ReplayedAt == nil:
		return "pending"
	case r.RefusedAs != nil:
		return "refused_again"
	}
	return "replayed"
}

// Decoded is the row's entry decoded, or why it does not decode.
func (r *Row) Decoded() (ingest.Reading, error) {
	v := ""
	if r.Version != nil {
		v = *r.Version
	}
	return ingest.Decode(v, string(r.Raw))
}

// selectRows reads rows of readings_rejected; the caller appends the WHERE
// clause on r. refused_as is the row that this row's replay became if the
// bridge refused it again: the row with replay_of naming this one and the
// replay's entry id.
const selectRows = `SELECT r.id, r.stream, r.entry_id, r.version, r.raw, r.error, r.rejected_at,
	r.replayed_at, r.replayed_stream, r.replayed_entry, r.replay_of,
	(SELECT min(c.id) FROM readings_rejected c
	 WHERE c.replay_of = r.id AND c.stream = r.replayed_stream AND c.entry_id = r.replayed_entry),
	r.source, r.edge_kind, r.topic, r.client_id, r.username, r.device_id, r.received_at
FROM readings_rejected r
`

func scanRows(rows pgx.Rows) ([]Row, error) {
	var out []Row
	for rows.Next() {
		var r Row
		if err := rows.Scan(&r.ID, &r.Stream, &r.EntryID, &r.Version, &r.Raw, &r.Error, &r.RejectedAt,
			&r.ReplayedAt, &r.ReplayedStream, &r.ReplayedEntry, &r.ReplayOf, &r.RefusedAs,
			&r.Source, &r.EdgeKind, &r.Topic, &r.ClientID, &r.Username, &r.DeviceID, &r.ReceivedAt); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// query runs selectRows with where and says what to do when the schema
// predates replays.
func query(ctx context.Context, pg *pgxpool.Pool, where string, args ...any) ([]Row, error) {
	rows, err := pg.Query(ctx, selectRows+where, args...)
	if err != nil {
		return nil, SchemaHint(fmt.Errorf("read readings_rejected: %w", err))
	}
	out, err := scanRows(rows)
	if err != nil {
		return nil, SchemaHint(fmt.Errorf("read readings_rejected: %w", err))
	}
	return out, nil
}

// SchemaHint adds what to do to an error of a database whose schema is older
// than this firehose (42703 undefined column, 42P01 undefined table).
func SchemaHint(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42703" || pe.Code == "42P01") {
		return fmt.Errorf("%w; the database's schema is older than this firehose: run `firehose migrate` with the same --postgres first", err)
	}
	return err
}

// StreamPrefix is how the stream keys of the deployment begin: rows of other
// deployments sharing the database are not its own.
func StreamPrefix(streams stream.Streams) string {
	k := streams.Key(0)
	return k[:strings.LastIndexByte(k, '{')]
}

// Filter selects the rows List reads.
type Filter struct {
	Prefix   string    // StreamPrefix of the deployment
	Since    time.Time // rejected since then; zero: any time
	Replayed bool      // also rows already replayed
	Limit    int       // at most this many; 0: all
	// Newest lists the newest first (by id) instead of the oldest; with
	// Before, only rows whose id is below it (0: no bound), for pages.
	Newest bool
	Before int64
}

// List reads the deployment's rows that f selects, oldest first (newest
// first with f.Newest).
func List(ctx context.Context, pg *pgxpool.Pool, f Filter) ([]Row, error) {
	var since *time.Time
	if !f.Since.IsZero() {
		since = &f.Since
	}
	var limit *int
	if f.Limit > 0 {
		limit = &f.Limit
	}
	var before *int64
	if f.Before > 0 {
		before = &f.Before
	}
	order := "r.id"
	if f.Newest {
		order = "r.id DESC"
	}
	return query(ctx, pg, `WHERE starts_with(r.stream, $1) AND ($2::timestamptz IS NULL OR r.rejected_at >= $2)
	AND ($3 OR r.replayed_at IS NULL) AND ($5::bigint IS NULL OR r.id < $5) ORDER BY `+order+` LIMIT $4`, f.Prefix, since, f.Replayed, limit, before)
}

// CountOthers counts the rows of streams of other deployments (whose keys
// do not begin with prefix).
func CountOthers(ctx context.Context, pg *pgxpool.Pool, prefix string) (int64, error) {
	var others int64
	if err := pg.QueryRow(ctx, "SELECT count(*) FROM readings_rejected WHERE NOT starts_with(stream, $1)", prefix).Scan(&others); err != nil {
		return 0, fmt.Errorf("count rows of other deployments: %w", err)
	}
	return others, nil
}

// ByID reads the rows with these ids, in id order.
func ByID(ctx context.Context, pg *pgxpool.Pool, ids []int64) ([]Row, error) {
	return query(ctx, pg, "WHERE r.id = ANY($1) ORDER BY r.id", ids)
}

// Preview is a short line of what the row's entry holds.
func (r *Row) Preview() string {
	if r.Edge() {
		d := r.DeadLetter()
		return Printable(fmt.Sprintf("edge %s message on %s from client %q (%d bytes)", d.Kind, d.Topic, d.ClientID, len(d.Payload)), 80)
	}
	rd, err := r.Decoded()
	if err != nil {
		return "(does not decode) " + Printable(string(r.Raw), 40)
	}
	if rd.Row != nil {
		return Printable(rowPreview(&rd), 80)
	}
	s := fmt.Sprintf("%s reading=%s ts=%s", rd.DeviceID, strconv.FormatFloat(rd.Value, 'g', -1, 64), rd.Time.Format(time.RFC3339Nano))
	if rd.Payload != nil {
		s += " " + string(rd.Payload)
	}
	return Printable(s, 80)
}

// rowPreview is a typed row in one line: its table, then its columns as
// name=value.
func rowPreview(rd *ingest.Reading) string {
	var b strings.Builder
	b.WriteString(rd.Row.Shape.Table + ":")
	for i, c := range rd.Row.Shape.Columns {
		v, _ := json.Marshal(RowValue(c.Type, &rd.Row.Values[i]))
		fmt.Fprintf(&b, " %s=%s", c.Name, v)
	}
	return b.String()
}

// RowValue is a typed row's value as JSON shows it: nil for NULL, a
// number, a string (text, numeric's decimal text, a timestamptz in RFC
// 3339), a bool, a JSON value (jsonb), an array; a float JSON cannot hold
// (NaN, ±Inf) as its text.
func RowValue(t typed.Type, v *typed.Value) any {
	if v.Null {
		return nil
	}
	float := func(f float64) any {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return strconv.FormatFloat(f, 'g', -1, 64)
		}
		return f
	}
	switch t {
	case typed.Boolean:
		return v.Bool
	case typed.Smallint, typed.Integer, typed.Bigint:
		return v.Int
	case typed.Real, typed.Double:
		return float(v.Float)
	case typed.Timestamptz:
		return v.Time().Format(time.RFC3339Nano)
	case typed.JSONB:
		if json.Valid([]byte(v.Str)) {
			return json.RawMessage(v.Str)
		}
		return v.Str
	case typed.DoubleArray:
		out := make([]any, len(v.Floats()))
		for i, f := range v.Floats() {
			out[i] = float(f)
		}
		return out
	case typed.TextArray:
		return v.Strs()
	}
	return v.Str
}

// Printable makes s safe for one table cell: invalid UTF-8, control and other
// unprintable characters are escaped, and it is cut after max characters.
func Printable(s string, max int) string {
	var b strings.Builder
	n := 0
	for i := 0; i < len(s); {
		if n == max {
			b.WriteString("…")
			break
		}
		c, w := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && w == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !unicode.IsPrint(c):
			q := strconv.QuoteRune(c)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(c)
		}
		i += w
		n++
	}
	return b.String()
}
