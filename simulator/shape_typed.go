package simulator

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The shape typed sends the telemetry message (runTelemetry, appendTelemetry)
// to the rules sim-typed-mqtt and sim-typed of deploy/simulate-rules.yaml,
// which route it to the typed table TypedTable: one row a message, its
// columns taken from the message, the topic and the edge. The verification
// counts the rows by (device, time) as the other shapes count theirs by
// (device, metric, ts) (verifyRows), then checks every row column by column
// against what its device sent (verifyColumns).

// typedColumns are the columns of TypedTable and their types as the rules
// declare them (format_type's spelling), the kept unknown fields' extra
// included.
var typedColumns = []struct{ name, typ string }{
	{"device_id", "text"},
	{"time", "timestamp with time zone"},
	{"received_at", "timestamp with time zone"},
	{"site", "text"},
	{"line", "text"},
	{"temp", "real"},
	{"pressure", "double precision"},
	{"rpm", "integer"},
	{"seq", "bigint"},
	{"msg_id", "text"},
	{"extra", "jsonb"},
}

// ColumnCheck is the verification of the shape typed's rows column by
// column: each row of a message the fleet sent must hold what the message
// said (temp as a real, pressure, rpm, seq, msg_id), what its topic said
// (site and line, NULL over HTTP, which has no topic), a receipt time, and
// in extra the metrics beyond the columns (m3, m4, ... with --metric-count
// above 3, else NULL).
type ColumnCheck struct {
	Table string `json:"table"`
	// Types lists the columns missing from the table or of another type
	// than the rules declare ("rpm: want integer, got bigint"): a failure,
	// and with a column missing no row is checked.
	Types []string `json:"types,omitempty"`
	// Rows: rows checked (every row of a unit the fleet sent, duplicates
	// included); Mismatched: rows of them with at least one column unlike
	// what the device sent (a failure), by column in ByColumn.
	Rows       int64            `json:"rows"`
	Mismatched int64            `json:"mismatched"`
	ByColumn   map[string]int64 `json:"by_column,omitempty"`
	// Sample names some mismatches.
	Sample []ColumnMismatch `json:"sample,omitempty"`
}

// ColumnMismatch is one column of one row unlike what its device sent.
type ColumnMismatch struct {
	Device string `json:"device"`
	Seq    uint64 `json:"seq"`
	Column string `json:"column"`
	Want   string `json:"want"`
	Got    string `json:"got"`
}

// String describes the mismatch: "sim-x-1 seq 3 rpm: want 1203, got 1204".
func (m ColumnMismatch) String() string {
	return fmt.Sprintf("%s seq %d %s: want %s, got %s", m.Device, m.Seq, m.Column, m.Want, m.Got)
}

// Failed says the check found a table or a row unlike the rules and the
// messages.
func (c *ColumnCheck) Failed() bool { return c != nil && (c.Mismatched > 0 || len(c.Types) > 0) }

// nullText is how a NULL shows in a mismatch.
const nullText = "NULL"

// typedRow is one row of TypedTable as read back.
type typedRow struct {
	device         string
	ms             int64
	received       bool
	site, line     *string
	temp, pressure *float64
	rpm, seq       *int64
	msgID, extra   *string
}

// verifyColumns checks the table sc.typed: its columns' types, then each
// row of the run's devices that belongs to a unit of their ledgers (found
// by device and time, as verifyRows finds it) against the message the unit
// sent: k metrics of the value in the ledger (ledger.values).
func verifyColumns(ctx context.Context, db *pgxpool.Pool, sc scope, devices []*device, k int) (*ColumnCheck, error) {
	c := &ColumnCheck{Table: sc.typed}
	missing, err := c.checkTypes(ctx, db)
	if err != nil || missing {
		return c, err
	}
	byID := make(map[string]*device, len(devices))
	for _, d := range devices {
		byID[d.id] = d
	}
	q := fmt.Sprintf(`SELECT device_id, (extract(epoch FROM "time") * 1000)::bigint, received_at IS NOT NULL,
		site, line, temp, pressure, rpm, seq, msg_id, extra::text FROM %s WHERE %s`, sc.typed, sc.where())
	rows, err := db.Query(ctx, q, sc.args()...)
	if err != nil {
		return nil, fmt.Errorf("read the run's rows of %s: %w", sc.typed, err)
	}
	defer rows.Close()
	var r typedRow
	for rows.Next() {
		if err := rows.Scan(&r.device, &r.ms, &r.received, &r.site, &r.line, &r.temp, &r.pressure, &r.rpm,
			&r.seq, &r.msgID, &r.extra); err != nil {
			return nil, fmt.Errorf("read the run's rows of %s: %w", sc.typed, err)
		}
		d := byID[r.device]
		if d == nil {
			continue // not the fleet's: verifyRows counts it as unexpected
		}
		i := sort.Search(len(d.ts), func(i int) bool { return d.ts[i] >= r.ms })
		if i == len(d.ts) || d.ts[i] != r.ms || i >= len(d.values) {
			continue // no unit of the device: unexpected, likewise
		}
		c.check(d, uint64(i+1), d.values[i], k, &r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the run's rows of %s: %w", sc.typed, err)
	}
	return c, nil
}

// checkTypes compares the table's columns with typedColumns, noting each
// difference in c.Types; missing says a column is not there at all.
func (c *ColumnCheck) checkTypes(ctx context.Context, db *pgxpool.Pool) (missing bool, err error) {
	rows, err := db.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`, c.Table)
	if err != nil {
		return false, fmt.Errorf("read the columns of %s: %w", c.Table, err)
	}
	defer rows.Close()
	have := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return false, fmt.Errorf("read the columns of %s: %w", c.Table, err)
		}
		have[name] = typ
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("read the columns of %s: %w", c.Table, err)
	}
	for _, col := range typedColumns {
		typ, ok := have[col.name]
		switch {
		case !ok:
			missing = true
			c.Types = append(c.Types, fmt.Sprintf("%s: want %s, missing", col.name, col.typ))
		case typ != col.typ:
			c.Types = append(c.Types, fmt.Sprintf("%s: want %s, got %s", col.name, col.typ, typ))
		}
	}
	return missing, nil
}

// check compares row r with unit seq of device d, which measured v and sent
// k metrics. Numbers compare by value; the texts only show a mismatch.
func (c *ColumnCheck) check(d *device, seq uint64, v float64, k int, r *typedRow) {
	c.Rows++
	bad := false
	diff := func(column string, equal bool, want, got string) {
		if equal {
			return
		}
		bad = true
		if c.ByColumn == nil {
			c.ByColumn = map[string]int64{}
		}
		c.ByColumn[column]++
		if len(c.Sample) < maxSamples {
			c.Sample = append(c.Sample, ColumnMismatch{Device: d.id, Seq: seq, Column: column, Want: want, Got: got})
		}
	}
	text := func(column string, want *string, got *string) {
		diff(column, (want == nil && got == nil) || (want != nil && got != nil && *want == *got), textOrNull(want), textOrNull(got))
	}
	float := func(column string, want *float64, got *float64) {
		diff(column, (want == nil && got == nil) || (want != nil && got != nil && *want == *got), floatOrNull(want), floatOrNull(got))
	}
	integer := func(column string, want *int64, got *int64) {
		diff(column, (want == nil && got == nil) || (want != nil && got != nil && *want == *got), intOrNull(want), intOrNull(got))
	}

	diff("received_at", r.received, "a time", nullText)
	var site, line *string
	if d.mqtt { // the MQTT rule captures them from the topic; HTTP has none
		s, l := deviceSite(d.idx)
		site, line = &s, &l
	}
	text("site", site, r.site)
	text("line", line, r.line)
	// temp is a real: the message's value as a float32.
	temp := float64(float32(telemetryValue(0, v, seq)))
	float("temp", &temp, r.temp)
	var pressure *float64
	if k > 1 {
		x := telemetryValue(1, v, seq)
		pressure = &x
	}
	float("pressure", pressure, r.pressure)
	var rpm *int64
	if k > 2 {
		n := int64(telemetryValue(2, v, seq))
		rpm = &n
	}
	integer("rpm", rpm, r.rpm)
	n := int64(seq)
	integer("seq", &n, r.seq)
	id := string(messageID(nil, d.id, seq))
	text("msg_id", &id, r.msgID)
	wantExtra, gotExtra, ok := extraTexts(v, seq, k, r.extra)
	diff("extra", ok, wantExtra, gotExtra)
	if bad {
		c.Mismatched++
	}
}

// extraTexts are the extra column a row should hold, the metrics m3 ...
// of a message of k metrics ({"m3":24.25,...}; NULL when k <= 3), and the
// one got holds; ok says they are equal (the same keys, the same numbers).
func extraTexts(v float64, seq uint64, k int, got *string) (want, have string, ok bool) {
	want = nullText
	if k > 3 {
		var b strings.Builder
		b.WriteByte('{')
		for i := 3; i < k; i++ {
			if i > 3 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%q:%s", metricName(i), strconv.FormatFloat(telemetryValue(i, v, seq), 'f', -1, 64))
		}
		b.WriteByte('}')
		want = b.String()
	}
	if got == nil {
		return want, nullText, k <= 3
	}
	if k <= 3 {
		return want, *got, false
	}
	var m map[string]float64
	if err := json.Unmarshal([]byte(*got), &m); err != nil || len(m) != k-3 {
		return want, *got, false
	}
	for i := 3; i < k; i++ {
		if x, found := m[metricName(i)]; !found || x != telemetryValue(i, v, seq) {
			return want, *got, false
		}
	}
	return want, *got, true
}

func textOrNull(s *string) string {
	if s == nil {
		return nullText
	}
	return *s
}

func intOrNull(n *int64) string {
	if n == nil {
		return nullText
	}
	return strconv.FormatInt(*n, 10)
}

func floatOrNull(x *float64) string {
	if x == nil {
		return nullText
	}
	return floatText(*x)
}

// floatText spells x exactly, as briefly as it can: as a float32 when it is
// one (a real column's value), else as a float64.
func floatText(x float64) string {
	if !math.IsInf(x, 0) && float64(float32(x)) == x {
		return strconv.FormatFloat(x, 'g', -1, 32)
	}
	return strconv.FormatFloat(x, 'g', -1, 64)
}

// columnNames lists the columns of a check's mismatches, most first.
func (c *ColumnCheck) columnNames() []string {
	names := make([]string, 0, len(c.ByColumn))
	for n := range c.ByColumn {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		if c.ByColumn[a] != c.ByColumn[b] {
			return int(c.ByColumn[b] - c.ByColumn[a])
		}
		return strings.Compare(a, b)
	})
	return names
}
