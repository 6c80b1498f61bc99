package simulator

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
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
// acknowledged births.
func rowsAcked(ls []*ledger) (acked, qos0, births int64) {
	for _, l := range ls {
		for i, f := range l.flags {
			switch {
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
// every metric of every acknowledged unit once. Rows of Sparkplug births and
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

	rows, err := db.Query(ctx, `SELECT device_id, metric, (extract(epoch FROM ts) * 1000)::bigint, count(*)
		FROM readings WHERE `+sc.where()+` GROUP BY 1, 2, 3`, sc.args()...)
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

	checks := map[string]*MetricCheck{}
	check := func(name string) *MetricCheck {
		m, ok := checks[name]
		if !ok {
			m = &MetricCheck{Metric: name}
			checks[name] = m
			t.metrics = append(t.metrics, m)
		}
		return m
	}
	for _, l := range ls {
		c := landed[l]
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
				m := check(name)
				m.RowsLanded += n
				extra := max(n-1, 0)
				switch {
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
