package simulator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/encoding/protowire"

	"firehose/internal/spbwire"
)

// MetricCheck is the verification of one metric's rows (shapes telemetry,
// samples, sparkplug): each acknowledged unit (message or sample) must have
// landed exactly one row of the metric, found by (device, metric, device
// time).
type MetricCheck struct {
	Metric string `json:"metric"`
	// RowsAcked: rows of the metric the acknowledged units carry;
	// RowsLanded: rows of it found (of any unit of the run).
	RowsAcked  int64 `json:"rows_acked"`
	RowsLanded int64 `json:"rows_landed"`
	// Missing: of an acknowledged unit, not landed (a failure).
	Missing int64 `json:"missing"`
	// Duplicated: extra rows nothing explains (a failure).
	Duplicated int64 `json:"duplicated"`
	// DupFromResends: the second row of a unit sent again on purpose after
	// its acknowledgement (--resend): expected when the target does not
	// deduplicate, a failure with --expect-dedup.
	DupFromResends int64 `json:"dup_from_resends"`
	// DupAfterRetry: extra rows of units retried after an attempt without
	// an acknowledgement (allowed).
	DupAfterRetry int64 `json:"dup_after_retry"`
	// LandedWithoutAck: rows of units whose acknowledgement never came
	// (allowed).
	LandedWithoutAck int64 `json:"landed_without_ack"`
	// Partial: rows of a message the target was to store whole as an
	// edge dead letter (a Sparkplug DATA with an alias no birth gave, at
	// QoS 1/2): partial storage, a failure.
	Partial int64 `json:"partial,omitempty"`
}

// EventCheck counts the rows of one kind of Sparkplug birth or death
// (metric sparkplug/NBIRTH, ...): one per acknowledged message.
type EventCheck struct {
	Metric string `json:"metric"`
	Acked  int64  `json:"acked"`
	Landed int64  `json:"landed"`
	// Resent: those messages sent again on purpose (--resend), whose
	// second row is allowed; Unacked: births sent without an
	// acknowledgement (QoS 0, or lost), which may land.
	Resent  int64 `json:"resent"`
	Unacked int64 `json:"unacked"`
}

// rowTally is what verifyRows found.
type rowTally struct {
	metrics    []*MetricCheck
	events     []*EventCheck
	rows       int64 // every row of the run's devices
	units      int64 // distinct (device, ts) with a row
	unexpected int64 // rows no unit of the fleet explains
	qos0Sent   int64 // QoS 0 units
	qos0Landed int64
	missingRef []Ref
	dupRef     []Ref
	partialRef []Ref
	checks     map[string]*MetricCheck
}

// ledgers is every ledger of the fleet: each device's, and a Sparkplug edge
// node's devices'.
func (f *fleet) ledgers() []*ledger {
	var out []*ledger
	for _, d := range f.devices {
		out = append(out, &d.ledger)
		out = append(out, d.subs...)
	}
	return out
}

// unitRows is the rows an acknowledged unit of l lands.
func (l *ledger) unitRows(i int) []string {
	if l.flags[i]&flagBirth != 0 {
		return l.birthMetrics
	}
	return l.metrics
}

// rowsAcked counts the rows the acknowledged units of the ledgers carry
// (readings), those at QoS 0, and the Sparkplug birth rows of the
// acknowledged births. A unit stored as an edge dead letter
// (flagDeadLetter) carries none.
func rowsAcked(ls []*ledger) (acked, qos0, births int64) {
	for _, l := range ls {
		for i, f := range l.flags {
			switch {
			case f&flagDeadLetter != 0: // no row
			case f&flagAcked != 0:
				acked += int64(len(l.unitRows(i)))
				if f&flagBirth != 0 {
					births++
				}
			case f&flagQoS0 != 0:
				qos0 += int64(len(l.unitRows(i)))
			}
		}
	}
	return acked, qos0, births
}

// verifyRows reads the run's rows grouped by (device, metric, device time in
// ms), one query over the run's scope, and checks them against the ledgers:
// every metric of every acknowledged unit once. For a typed table (sc.typed)
// a unit is one row, counted under the pseudo-metric the table's name. Rows of Sparkplug births and
// deaths (metric sparkplug/...) are counted apart, against deaths (the
// acknowledged NDEATHs; deathsUnacked those sent at QoS 0 or unanswered).
func verifyRows(ctx context.Context, db *pgxpool.Pool, sc scope, ls []*ledger, deaths, deathsUnacked int64) (*rowTally, error) {
	byID := make(map[string]*ledger, len(ls))
	stride := 1
	for _, l := range ls {
		byID[l.rowID] = l
		stride = max(stride, len(l.metrics), len(l.birthMetrics))
	}
	// index[name] per metric list: the lists are shared by the ledgers.
	indexes := map[*string]map[string]int{}
	indexOf := func(list []string) map[string]int {
		if len(list) == 0 {
			return nil
		}
		m, ok := indexes[&list[0]]
		if !ok {
			m = make(map[string]int, len(list))
			for i, n := range list {
				m[n] = i
			}
			indexes[&list[0]] = m
		}
		return m
	}
	landed := make(map[*ledger][]uint8, len(ls))
	t := &rowTally{}
	events := map[string]*EventCheck{}
	event := func(name string) *EventCheck {
		e, ok := events[name]
		if !ok {
			e = &EventCheck{Metric: name}
			events[name] = e
		}
		return e
	}

	q, args := `SELECT device_id, metric, (extract(epoch FROM ts) * 1000)::bigint, count(*)
		FROM readings WHERE `+sc.where()+` GROUP BY 1, 2, 3`, sc.args()
	if sc.typed != "" {
		// A row of a typed table is a unit's one row: its metric is the
		// table's name (the ledgers' pseudo-metric), its time the time
		// column.
		q = fmt.Sprintf(`SELECT device_id, $%d::text, (extract(epoch FROM "time") * 1000)::bigint, count(*)
		FROM %s WHERE %s GROUP BY 1, 3`, sc.next(), sc.typed, sc.where())
		args = sc.args(sc.typed)
	}
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read the run's rows: %w", err)
	}
	defer rows.Close()
	var (
		dev, metric string
		ms, count   int64
	)
	for rows.Next() {
		if err := rows.Scan(&dev, &metric, &ms, &count); err != nil {
			return nil, fmt.Errorf("read the run's rows: %w", err)
		}
		t.rows += count
		if strings.HasPrefix(metric, spEventRows) {
			event(metric).Landed += count
			continue
		}
		l := byID[dev]
		if l == nil {
			t.unexpected += count
			continue
		}
		i := sort.Search(len(l.ts), func(i int) bool { return l.ts[i] >= ms })
		if i == len(l.ts) || l.ts[i] != ms {
			t.unexpected += count
			continue
		}
		mi, ok := indexOf(l.unitRows(i))[metric]
		if !ok {
			t.unexpected += count
			continue
		}
		c := landed[l]
		if c == nil {
			c = make([]uint8, len(l.flags)*stride)
			landed[l] = c
		}
		c[i*stride+mi] = uint8(min(int64(c[i*stride+mi])+count, 255))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the run's rows: %w", err)
	}

	for _, l := range ls {
		t.classify(l, landed[l], stride, event)
	}
	if deaths+deathsUnacked > 0 {
		e := event(spEventRows + "NDEATH")
		e.Acked, e.Unacked = e.Acked+deaths, e.Unacked+deathsUnacked
	}
	for _, e := range events {
		t.events = append(t.events, e)
	}
	slices.SortFunc(t.events, func(a, b *EventCheck) int { return strings.Compare(a.Metric, b.Metric) })
	return t, nil
}

// classify counts the units of l against c, the rows found for them
// (c[i*stride+mi]: unit i, metric mi of l.unitRows(i); nil when none
// landed), into the metric checks and, for births, event.
func (t *rowTally) classify(l *ledger, c []uint8, stride int, event func(string) *EventCheck) {
	for i, f := range l.flags {
		if f&flagBirth != 0 {
			name := spEventRows + "DBIRTH"
			if len(l.birthMetrics) > 0 && l.birthMetrics[0] == spBdSeq {
				name = spEventRows + "NBIRTH"
			}
			e := event(name)
			switch {
			case f&flagAcked == 0:
				e.Unacked++
			case f&flagResentOnPurpose != 0:
				e.Acked++
				e.Resent++
			default:
				e.Acked++
			}
		}
		if c != nil && slices.ContainsFunc(c[i*stride:(i+1)*stride], func(n uint8) bool { return n > 0 }) {
			t.units++
		}
		for mi, name := range l.unitRows(i) {
			var n int64
			if c != nil {
				n = int64(c[i*stride+mi])
			}
			m := t.check(name)
			m.RowsLanded += n
			extra := max(n-1, 0)
			switch {
			case f&flagDeadLetter != 0:
				// The target took the whole message as a dead letter,
				// acknowledged or not: a row of it is partial storage.
				if n > 0 {
					m.Partial += n
					t.partialRef = appendRef(t.partialRef, l.rowID+" "+name, uint64(i+1))
				}
			case f&flagQoS0 != 0:
				t.qos0Sent++
				if n > 0 {
					t.qos0Landed++
				}
				m.Duplicated += extra
			case f&flagAcked != 0:
				m.RowsAcked++
				if n == 0 {
					m.Missing++
					t.missingRef = appendRef(t.missingRef, l.rowID+" "+name, uint64(i+1))
					continue
				}
				if f&flagResentOnPurpose != 0 && extra > 0 {
					m.DupFromResends++
					extra--
				}
				if f&flagResent != 0 {
					m.DupAfterRetry += extra
				} else if extra > 0 {
					m.Duplicated += extra
					t.dupRef = appendRef(t.dupRef, l.rowID+" "+name, uint64(i+1))
				}
			default: // sent, never acknowledged
				if n > 0 {
					m.LandedWithoutAck++
				}
				m.DupAfterRetry += extra
			}
		}
	}
}

// check is the MetricCheck of metric name, added on first use.
func (t *rowTally) check(name string) *MetricCheck {
	if t.checks == nil {
		t.checks = map[string]*MetricCheck{}
	}
	m, ok := t.checks[name]
	if !ok {
		m = &MetricCheck{Metric: name}
		t.checks[name] = m
		t.metrics = append(t.metrics, m)
	}
	return m
}

// DeadLetterCheck is the verification of the Sparkplug DATA messages sent
// with an alias no birth gave (--sparkplug-rebirth-every) at QoS 1/2: the
// target stores each whole as an edge dead letter (readings_rejected,
// source 'edge', edge_kind 'sparkplug') before its acknowledgement, and
// lands none of its rows (see MetricCheck.Partial).
type DeadLetterCheck struct {
	// Expected: such messages acknowledged, each of which must have a
	// dead letter; Found: the edge dead letters of the run's edge nodes.
	Expected int64 `json:"expected"`
	Found    int64 `json:"found"`
	// Missing: acknowledged such messages without a dead letter (a
	// failure).
	Missing       int64 `json:"missing"`
	MissingSample []Ref `json:"missing_sample,omitempty"`
	// Again: dead letters beyond the first of a message (allowed: a QoS 1
	// resend by the client after a reconnect, or --resend, hands the
	// target the same message again, and each copy is a dead letter).
	Again int64 `json:"again"`
	// Unacked: dead letters of such messages whose acknowledgement never
	// came (allowed); Other: dead letters of no such message (a birth or a
	// DATA the target could not resolve: its rows show as missing).
	Unacked int64 `json:"unacked"`
	Other   int64 `json:"other"`
}

// edgeLetter is one edge dead letter of the run: its device and the
// Sparkplug payload's timestamp (-1 when it has none).
type edgeLetter struct {
	device string
	ms     int64
}

// countDeadLetters matches the edge dead letters found to the units of the
// ledgers, by device and device time (a Sparkplug payload's timestamp).
func countDeadLetters(ls []*ledger, letters []edgeLetter) *DeadLetterCheck {
	byID := make(map[string]*ledger, len(ls))
	for _, l := range ls {
		byID[l.rowID] = l
	}
	d := &DeadLetterCheck{Found: int64(len(letters))}
	got := map[*ledger]map[int]int64{}
	for _, dl := range letters {
		l := byID[dl.device]
		if l == nil {
			d.Other++
			continue
		}
		i, ok := slices.BinarySearch(l.ts, dl.ms)
		if !ok || l.flags[i]&flagDeadLetter == 0 {
			d.Other++
			continue
		}
		if got[l] == nil {
			got[l] = map[int]int64{}
		}
		got[l][i]++
	}
	for _, l := range ls {
		for i, f := range l.flags {
			if f&flagDeadLetter == 0 {
				continue
			}
			n := got[l][i]
			switch {
			case f&flagAcked == 0:
				d.Unacked += n
			case n == 0:
				d.Expected++
				d.Missing++
				d.MissingSample = appendRef(d.MissingSample, l.rowID, uint64(i+1))
			default:
				d.Expected++
				d.Again += n - 1
			}
		}
	}
	return d
}

// readDeadLetters reads the edge dead letters of the run's edge nodes
// (device ids in sc, stored since sc.since): device and payload
// timestamp. A readings_rejected without the edge columns (before schema
// 008) has none.
func readDeadLetters(ctx context.Context, db *pgxpool.Pool, sc scope) ([]edgeLetter, error) {
	w := `source = 'edge' AND edge_kind = 'sparkplug' AND device_id COLLATE "C" >= $1 AND device_id COLLATE "C" < $2`
	if sc.since != nil {
		w += ` AND rejected_at >= $3`
	}
	rows, err := db.Query(ctx, `SELECT device_id, raw FROM readings_rejected WHERE `+w, sc.args()...)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42703" { // undefined_column
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the run's edge dead letters: %w", err)
	}
	defer rows.Close()
	var out []edgeLetter
	for rows.Next() {
		var (
			dev string
			raw []byte
		)
		if err := rows.Scan(&dev, &raw); err != nil {
			return nil, fmt.Errorf("read the run's edge dead letters: %w", err)
		}
		out = append(out, edgeLetter{device: dev, ms: spTimestamp(raw)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the run's edge dead letters: %w", err)
	}
	return out, nil
}

// spTimestamp is a Sparkplug B payload's timestamp, -1 without.
func spTimestamp(p []byte) int64 {
	ms := int64(-1)
	walkProto(p, func(num protowire.Number, typ protowire.Type, v uint64, _ []byte) {
		if num == spbwire.PayloadTimestamp && typ == protowire.VarintType && v < 1<<62 {
			ms = int64(v)
		}
	})
	return ms
}
