package simulator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// scope finds the run's rows: every device id starts with the run's prefix,
// sim-<run>-, and "." is the byte after "-"; the COLLATE "C" matches the
// readings table's, so the (device_id, ts) index serves the range. When the
// table has committed_at (schema 002), only rows committed since the run
// started count, so a run id can be used again (a fleet with provisioned
// credentials has fixed ids): committed_at and since are both PostgreSQL's
// clock, and the bridge begins a batch's transaction after it read the batch.
//
// With typed set (the shape typed) the run's rows are in that table instead
// of readings, and since bounds their received_at, the edge's receipt time
// (a typed table has no committed_at): a run started just after another of
// the same run id could count the other's last rows only if the edge's
// clock ran behind PostgreSQL's.
type scope struct {
	lo, hi string
	since  *time.Time
	typed  string // the typed table of the run's rows; "" for readings
}

// table is the table of the run's rows.
func (s scope) table() string {
	if s.typed != "" {
		return s.typed
	}
	return "readings"
}

func newScope(prefix string) scope {
	return scope{lo: prefix, hi: strings.TrimSuffix(prefix, "-") + "."}
}

// where is the condition on the table of the run's rows, its parameters
// from $1 (see args).
func (s scope) where() string {
	w := `device_id COLLATE "C" >= $1 AND device_id COLLATE "C" < $2`
	switch {
	case s.since != nil && s.typed != "":
		w += ` AND received_at >= $3`
	case s.since != nil:
		w += ` AND committed_at >= $3`
	}
	return w
}

// args are where's parameters, followed by extra (numbered after them).
func (s scope) args(extra ...any) []any {
	a := []any{s.lo, s.hi}
	if s.since != nil {
		a = append(a, *s.since)
	}
	return append(a, extra...)
}

// next is the number of the first parameter after where's.
func (s scope) next() int { return len(s.args()) + 1 }

// openScope starts the run's scope: from now on, by PostgreSQL's clock, when
// the table has committed_at. Without it a run id that already has rows is
// refused, since they could not be told from this run's.
func openScope(ctx context.Context, db *pgxpool.Pool, sc scope) (scope, error) {
	if sc.typed != "" {
		return openTypedScope(ctx, db, sc)
	}
	prefix := sc.lo
	var (
		hasCommit bool
		now       time.Time
		existing  int64
	)
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'readings'::regclass
		AND attname = 'committed_at' AND NOT attisdropped), now()`).Scan(&hasCommit, &now)
	if err != nil {
		return sc, fmt.Errorf("inspect the readings table: %w", err)
	}
	if existing, err = countRows(ctx, db, sc); err != nil {
		return sc, err
	}
	switch {
	case hasCommit:
		sc.since = &now
	case existing > 0:
		return sc, fmt.Errorf("devices %s* already have %d rows in readings, and the table has no committed_at to tell them from this run's: choose another --run-id", prefix, existing)
	}
	return sc, nil
}

// openTypedScope starts the scope of a run whose rows go to a typed table:
// from now on, by PostgreSQL's clock, against the rows' received_at. The
// table must exist: firehose migrate creates it from the rules.
func openTypedScope(ctx context.Context, db *pgxpool.Pool, sc scope) (scope, error) {
	var (
		exists bool
		now    time.Time
	)
	if err := db.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL, now()`, sc.typed).Scan(&exists, &now); err != nil {
		return sc, fmt.Errorf("inspect the table %s: %w", sc.typed, err)
	}
	if !exists {
		return sc, fmt.Errorf("PostgreSQL has no table %s, where the rules of --shape typed send their rows: create it with firehose migrate --config deploy/simulate-rules.yaml (and serve with the same --config)", sc.typed)
	}
	sc.since = &now
	return sc, nil
}

// Landing polls every landPoll. The count of the run's rows has reached
// what it waits for when it stays still for landQuiet and the target's
// backlog is empty, or for landQuietBlind when the backlog is unknown, or
// for landQuietLong when the backlog stays above zero (other clients' work).
const (
	landPoll       = 200 * time.Millisecond
	landQuiet      = 600 * time.Millisecond
	landQuietBlind = 1500 * time.Millisecond
	landQuietLong  = 3 * time.Second
)

// connectPostgres opens a small pool for the verification and checks that
// the database answers and has the readings table.
func connectPostgres(ctx context.Context, rawURL string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--postgres %q is not a PostgreSQL URL: %v", redact(rawURL), err)
	}
	pc.MaxConns = 2
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w", redact(rawURL), err)
	}
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('readings') IS NOT NULL`).Scan(&exists); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach PostgreSQL at %s to verify what lands: %w (or run without verification: --postgres '')", redact(rawURL), err)
	}
	if !exists {
		pool.Close()
		return nil, fmt.Errorf("PostgreSQL at %s has no readings table: point --postgres at the deployment's database", redact(rawURL))
	}
	return pool, nil
}

func countRows(ctx context.Context, db *pgxpool.Pool, sc scope) (int64, error) {
	var n int64
	if err := db.QueryRow(ctx, `SELECT count(*) FROM `+sc.table()+` WHERE `+sc.where(), sc.args()...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count the run's rows: %w", err)
	}
	return n, nil
}

// waitLanding waits until the run's rows reach want (the acknowledged
// readings, plus the QoS 0 readings, which may land) and stop growing, or
// until timeout. It settles for less when the count has stayed still for a
// while and has reached acked (the rest were QoS 0 readings that were lost),
// or when the target's backlog is empty (nothing more is on its way).
// backlog returns the backlog scraped since the wait began, -1 when unknown.
// A transient failure of PostgreSQL (pgretry.Transient: the database restarting,
// a dropped connection) is retried (logged to log), within ctx.
func waitLanding(ctx context.Context, db *pgxpool.Pool, sc scope, acked, want int64, timeout time.Duration,
	backlog func() int64, progress func(int64), log *slog.Logger) (rows int64, timedOut bool, err error) {
	deadline := time.Now().Add(timeout)
	last, still := int64(-1), time.Now()
	for {
		var n int64
		err := retryPG(ctx, log, "count the run's rows", func() (err error) {
			n, err = countRows(ctx, db, sc)
			return err
		})
		if err != nil {
			return rows, false, err
		}
		now := time.Now()
		if n != last {
			last, still = n, now
		}
		rows = n
		progress(n)
		quiet, bl := now.Sub(still), backlog()
		switch {
		case n >= want && quiet >= landQuiet && bl == 0,
			n >= want && quiet >= landQuietBlind && bl < 0,
			quiet >= landQuietLong && (n >= acked || bl == 0):
			return n, false, nil
		case !now.Before(deadline):
			return n, true, nil
		}
		if !sleep(ctx, min(landPoll, time.Until(deadline)+time.Millisecond)) {
			return n, false, fmt.Errorf("wait for landing: %w", ctx.Err())
		}
	}
}

// Ref names one reading: a device and its sequence number.
type Ref struct {
	Device string `json:"device"`
	Seq    uint64 `json:"seq"`
}

// String names the reading as "sim-<run>-<n> seq <seq>".
func (r Ref) String() string { return r.Device + " seq " + strconv.FormatUint(r.Seq, 10) }

// maxSamples bounds the readings listed by name in a report.
const maxSamples = 20

// tally is the verification's arithmetic: the ledger of every device against
// the rows that landed.
type tally struct {
	rows          int64 // rows of the run's devices
	readings      int64 // distinct (device, seq) among them
	missing       int64 // acknowledged, not landed: a failure
	dupOnce       int64 // extra rows of readings sent once and acknowledged: a failure
	dupResent     int64 // extra rows of readings sent more than once: allowed
	dupOnPurpose  int64 // the second row of readings resent after their acknowledgement (Config.Resend)
	landedUnacked int64 // landed without an acknowledgement (it was lost): allowed
	unexpected    int64 // rows of readings the fleet never sent: a failure
	qos0Sent      int64
	qos0Landed    int64
	qos0Lost      int64 // at most once: not a failure
	missingRefs   []Ref
	dupOnceRefs   []Ref
}

// add classifies one device's readings: flags is its ledger (flags[seq-1]),
// landed[seq-1] the rows found for seq (saturating at 255).
func (t *tally) add(device string, flags, landed []uint8) {
	for i, f := range flags {
		var c int64
		if i < len(landed) {
			c = int64(landed[i])
		}
		t.rows += c
		if c > 0 {
			t.readings++
		}
		seq := uint64(i + 1)
		switch {
		case f&flagSent == 0:
			t.unexpected += c
		case f&flagQoS0 != 0:
			t.qos0Sent++
			if c > 0 {
				t.qos0Landed++
			} else {
				t.qos0Lost++
			}
			if c > 1 {
				t.dupOnce += c - 1
				t.dupOnceRefs = appendRef(t.dupOnceRefs, device, seq)
			}
		case f&flagAcked != 0:
			switch {
			case c == 0:
				t.missing++
				t.missingRefs = appendRef(t.missingRefs, device, seq)
			case c > 1 && f&flagResentOnPurpose != 0:
				t.dupOnPurpose++
				if f&flagResent != 0 {
					t.dupResent += c - 2
				} else if c > 2 {
					t.dupOnce += c - 2
					t.dupOnceRefs = appendRef(t.dupOnceRefs, device, seq)
				}
			case c > 1 && f&flagResent != 0:
				t.dupResent += c - 1
			case c > 1:
				t.dupOnce += c - 1
				t.dupOnceRefs = appendRef(t.dupOnceRefs, device, seq)
			}
		default: // sent, never acknowledged
			if c > 0 {
				t.landedUnacked++
			}
			if c > 1 {
				t.dupResent += c - 1
			}
		}
	}
	for i := len(flags); i < len(landed); i++ {
		t.rows += int64(landed[i])
		t.unexpected += int64(landed[i])
		if landed[i] > 0 {
			t.readings++
		}
	}
}

func appendRef(refs []Ref, device string, seq uint64) []Ref {
	if len(refs) < maxSamples {
		refs = append(refs, Ref{device, seq})
	}
	return refs
}

// verify reads what landed for the run's devices, by device and sequence
// number (payload seq, or id for /readings/fast), and classifies it against
// the ledgers.
func verify(ctx context.Context, db *pgxpool.Pool, sc scope, devices []*device) (*tally, error) {
	prefix := sc.lo
	rows, err := db.Query(ctx, `SELECT device_id, coalesce(payload->>'seq', payload->>'id'), count(*)
		FROM readings WHERE `+sc.where()+` GROUP BY 1, 2`, sc.args()...)
	if err != nil {
		return nil, fmt.Errorf("read the run's rows: %w", err)
	}
	defer rows.Close()
	landed := make([][]uint8, len(devices))
	var t tally
	var (
		dev   string
		seqs  *string
		count int64
	)
	for rows.Next() {
		if err := rows.Scan(&dev, &seqs, &count); err != nil {
			return nil, fmt.Errorf("read the run's rows: %w", err)
		}
		idx, err1 := strconv.Atoi(strings.TrimPrefix(dev, prefix))
		var seq uint64
		var err2 error = errors.New("no seq")
		if seqs != nil {
			seq, err2 = strconv.ParseUint(*seqs, 10, 64)
		}
		if err1 != nil || err2 != nil || idx < 1 || idx > len(devices) || seq < 1 || seq > 1<<32 {
			// Not a reading this fleet could have sent.
			t.rows += count
			t.unexpected += count
			continue
		}
		l := landed[idx-1]
		if need := int(seq); need > len(l) {
			l = append(l, make([]uint8, need-len(l))...)
			landed[idx-1] = l
		}
		l[seq-1] = uint8(min(int64(l[seq-1])+count, 255))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the run's rows: %w", err)
	}
	for i, d := range devices {
		t.add(d.id, d.flags, landed[i])
	}
	return &t, nil
}

// endToEnd reads the pipeline's latency over the run's rows, from receipt to
// commit and from measurement (the device's ts) to commit, in PostgreSQL.
// ok is false when the table has no committed_at (firehose before schema
// 002).
func endToEnd(ctx context.Context, db *pgxpool.Pool, sc scope) (receipt, measured Latency, ok bool, err error) {
	const pct = `percentile_cont(ARRAY[0.5, 0.9, 0.99, 0.999]) WITHIN GROUP (ORDER BY %s)`
	recv := `(extract(epoch FROM committed_at - received_at) * 1000)::float8`
	meas := `(extract(epoch FROM committed_at - ts) * 1000)::float8`
	q := fmt.Sprintf(`SELECT count(*), coalesce(avg(%s), 0), coalesce(max(%s), 0), `+pct+`,
		coalesce(avg(%s), 0), coalesce(max(%s), 0), `+pct+` FROM readings WHERE `+sc.where(),
		recv, recv, recv, meas, meas, meas)
	var (
		n      int64
		rp, mp []float64
	)
	err = db.QueryRow(ctx, q, sc.args()...).Scan(&n, &receipt.MeanMs, &receipt.MaxMs, &rp, &measured.MeanMs, &measured.MaxMs, &mp)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42703" { // undefined_column
		return receipt, measured, false, nil
	}
	if err != nil {
		return receipt, measured, false, fmt.Errorf("end-to-end latency: %w", err)
	}
	fill := func(l *Latency, p []float64) {
		l.Count = n
		if len(p) == 4 {
			l.P50Ms, l.P90Ms, l.P99Ms, l.P999Ms = round3(p[0]), round3(p[1]), round3(p[2]), round3(p[3])
		}
		l.MeanMs, l.MaxMs = round3(l.MeanMs), round3(l.MaxMs)
	}
	fill(&receipt, rp)
	fill(&measured, mp)
	return receipt, measured, true, nil
}

// landedPerSecond counts the run's rows by the second (from start) of their
// commit; nil without committed_at (and for a typed table, which has none).
func landedPerSecond(ctx context.Context, db *pgxpool.Pool, sc scope, start time.Time) (map[int64]int64, error) {
	if sc.since == nil || sc.typed != "" {
		return nil, nil // no committed_at
	}
	rows, err := db.Query(ctx, fmt.Sprintf(`SELECT floor(extract(epoch FROM committed_at - $%d::timestamptz))::bigint, count(*)
		FROM readings WHERE %s GROUP BY 1`, sc.next(), sc.where()), sc.args(start)...)
	if err != nil {
		return nil, fmt.Errorf("landing over time: %w", err)
	}
	defer rows.Close()
	out := map[int64]int64{}
	for rows.Next() {
		var s, n int64
		if err := rows.Scan(&s, &n); err != nil {
			return nil, fmt.Errorf("landing over time: %w", err)
		}
		out[s] += n
	}
	return out, rows.Err()
}
