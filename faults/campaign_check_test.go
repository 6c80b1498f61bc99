package faults

// The campaign's checker: one function, check, over everything the clients
// saw (every op's answers) and everything stored (rows of readings, dead
// letters, what subscribers received, memory after the drain), stating the
// invariants of docs/guarantees.md for the settings in
// force:
//
//   - every row an acknowledged message carries is stored, with the value
//     and measured time sent: once per acknowledged attempt without --dedup,
//     exactly once under --dedup when the reading has an identity (a resend
//     is then a true resend of the same series); losses only among readings
//     acknowledged after a snapshot and sent before the kill of the Redis
//     restored from it (no AOF); an acknowledged message that cannot become rows
//     (an MQTT 3.1.1 invalid payload at QoS 1/2, a Sparkplug DATA before its
//     birth or with an unknown alias) counts as stored when an edge dead
//     letter (readings_rejected, source 'edge') holds it byte for byte;
//   - nothing refused is stored, an unknown outcome at most once per
//     attempt, and no row appears that no client sent (or that a client sent
//     as another device);
//   - under --mqtt-auth no publish to another device's topics is
//     acknowledged, and no subscriber receives another device's commands;
//     no edge node births in a group its credentials do not name or sends
//     as another node, no device publishes the host's STATE (or leaves it
//     as a will), and the observer subscribed to both receives nothing;
//   - a subscribed reading (published to the upstream Mosquitto, which the
//     subscriber reads) that Mosquitto acknowledged is stored like one the
//     edge acknowledged; delivered to the subscriber at QoS 2 once per
//     acknowledged publish (such messages bypass --dedup); at QoS 1 also
//     once under --dedup (it has an identity), and without --dedup each
//     row stored again beyond its publishes counts against what Mosquitto
//     resent and the subscriber retried (cStore.SubResent), which bounds
//     them all together;
//   - a row of the typed table ctyped (the typed class) is judged as a
//     reading is, identified by device and msg_id: every acknowledged
//     message exactly one row per acknowledged attempt (once under --dedup,
//     its key the table, device and msg_id or time), with the columns sent
//     (time, seq, v, msg_id, and the cid kept in extra); an edge dead letter
//     excuses a missing one only beyond the edges' age bound (the retention
//     class's, over MQTT 3.1.1): nothing else in it is invalid. A message
//     that breaks a column's type is never a row; acknowledged, it must be
//     an MQTT 3.1.1 publish kept whole as an edge dead letter (MQTT 5 and
//     HTTP refuse it);
//   - the identity class's devices, at the identity edge: what they send is
//     judged as readings are; a certificate or registry device publishing
//     another device's reading, a registry device posting one (alone or
//     beside its own), a device whose certificate is revoked publishing its
//     own: never acknowledged, nothing of it stored; and the edge never
//     refuses the valid certificate or secret of a device it loaded (a
//     CONNACK refusal, a TLS alert, HTTP 401 or 503 "not loaded"), under
//     any fault, PostgreSQL down included (cEnv.identLogins tries every
//     device then);
//   - after the drain Redis used_memory and the processes' RSS are within
//     cRedisMemoryBound and cRSSBound.
//
// Readings the retention class sends lie within an hour either side of the
// edges' age bound (the retention minus one partition interval): those
// beyond it must be refused (or, MQTT 3.1.1, dead-lettered), and one
// acknowledged must survive the maintenance pass the check runs (docs/partitions.md,
// "Acknowledged means kept").

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Memory bounds after the drain: Redis holds the (trimmed) streams, the
// dedup keys of the window (66 bytes a reading, docs/guarantees.md) and Sparkplug state;
// the processes hold their pools and the broker's sessions.
const (
	cRedisMemoryBound = 64 << 20
	cRSSBound         = 512 << 20
)

// cViolation is one invariant broken, with what the clients saw and what was
// stored.
type cViolation struct {
	Invariant string     `json:"invariant"`
	Key       string     `json:"key,omitempty"`
	Detail    string     `json:"detail"`
	Attempts  []cAttempt `json:"attempts,omitempty"`
	Stored    []cStored  `json:"stored,omitempty"`
}

// cAttempt is one message that carried a row, and its answer.
type cAttempt struct {
	Op      int       `json:"op"`
	Kind    string    `json:"kind"`
	Outcome string    `json:"outcome"`
	Sent    time.Time `json:"sent"`
	At      time.Time `json:"at"`
	Detail  string    `json:"detail,omitempty"`
	Probe   bool      `json:"probe,omitempty"` // sent as another device: must never be stored
}

// cStored is a row of readings, or of the typed table (Table set: Tag is
// its msg_id, Value v, TS time, Extra the cid kept in extra), as the
// checker read it.
type cStored struct {
	Table  string    `json:"table,omitempty"`
	Device string    `json:"device"`
	Metric string    `json:"metric"`
	Tag    string    `json:"tag"`
	Value  float64   `json:"value"`
	TS     time.Time `json:"ts"`
	Seq    int64     `json:"seq,omitempty"`
	Extra  string    `json:"extra_cid,omitempty"`
}

func (s cStored) key() string { return cKey(s.Table, s.Device, s.Metric, s.Tag) }

// cStore is everything stored that the checker reads.
type cStore struct {
	Rows        []cStored                         // readings' and the typed table's
	DeadLetters func(needle []byte) (bool, error) // whether a dead letter holds needle
	Commands    []cReceived
	RedisMemory int64
	RSS         map[string]int64
	// SubResent is what may store a subscribed QoS 1 message again: the
	// PUBLISHes Mosquitto resent to the subscriber (DUP) and the store
	// attempts the subscriber retried (one in doubt may have written),
	// summed over its lives.
	SubResent int
}

// cSummary counts what a seed did and found.
type cSummary struct {
	Acked, Refused, Unknown int
	Rows, DeadLettered      int
	// SubAcked and SubRows are the subscribed class's messages Mosquitto
	// acknowledged and rows judged; SubExtra its rows stored again at QoS 1
	// beyond their publishes, within st.SubResent.
	SubAcked, SubRows, SubExtra int
	// SubExtraDedup are those of SubExtra that --dedup should have
	// recognised (a violation); SubAgain names the rows of SubExtra.
	SubExtraDedup int
	SubAgain      []string
	// TypedAcked and TypedRows are the typed class's messages acknowledged
	// and the rows of the typed table judged (both within Acked and Rows);
	// TypedBad the messages breaking a column's type it sent, of them
	// TypedBadDead acknowledged and found as edge dead letters (MQTT
	// 3.1.1), the others refused or unknown.
	TypedAcked, TypedRows  int
	TypedBad, TypedBadDead int
	// IdentAcked and IdentRows are the identity class's messages
	// acknowledged (by the identity edge, probes aside) and the rows of its
	// devices judged; of IdentAcked, IdentCertHTTP the requests over HTTPS
	// that a client certificate identified; IdentProbes its probes sent, of
	// them IdentProbesRefused answered with a refusal (the others unknown:
	// an MQTT 3.1.1 client is disconnected, a revoked certificate's HTTPS
	// handshake fails, a fault may hide the answer).
	IdentAcked, IdentRows, IdentCertHTTP int
	IdentProbes, IdentProbesRefused      int
	Violations                           []cViolation
}

// check states the invariants over a seed's answers and store, in phases:
// what each row's attempts were, what was stored of it, the verdict on each
// row, then commands and memory.
func check(plan *cPlan, answers []cAnswer, windows []cWindow, st cStore) cSummary {
	var sum cSummary
	expects, keys := cExpectations(plan, answers, &sum)
	stored := map[string][]cStored{}
	for _, s := range st.Rows {
		if cIgnored(s) {
			continue
		}
		sum.Rows++
		if s.Table != "" {
			sum.TypedRows++
		}
		if cIdentDevice(s.Device) {
			sum.IdentRows++
		}
		if expects[s.key()] == nil {
			sum.Violations = append(sum.Violations, cViolation{Invariant: "nothing stored that no client sent",
				Key: s.key(), Detail: "a row no operation carries (or carries under another device)", Stored: []cStored{s}})
			continue
		}
		stored[s.key()] = append(stored[s.key()], s)
	}
	for _, k := range keys {
		if e := expects[k]; e.row.Bad {
			sum.TypedBad++
			if slices.ContainsFunc(e.attempts, func(a cAttempt) bool { return a.Outcome == ansAcked }) && cDeadLettered(st, e.row, e.ops) {
				sum.TypedBadDead++
			}
		}
		vs, deadLettered, extra, underDedup := cJudge(plan, windows, st, expects[k], stored[k])
		sum.Violations = append(sum.Violations, vs...)
		if deadLettered {
			sum.DeadLettered++
		}
		if cSubQoS(plan, expects[k]) != 0 {
			sum.SubRows += len(stored[k])
		}
		if extra > 0 {
			sum.SubExtra += extra
			sum.SubAgain = append(sum.SubAgain, fmt.Sprintf("%s ×%d", k, extra))
			if underDedup {
				sum.SubExtraDedup += extra
			}
		}
	}
	if sum.SubExtra > st.SubResent {
		again := sum.SubAgain
		if len(again) > 20 {
			again = append(again[:20:20], "...")
		}
		sum.Violations = append(sum.Violations, cViolation{Invariant: "nothing stored twice (subscriber, QoS 1)",
			Detail: fmt.Sprintf("%d rows stored again beyond their publishes, but Mosquitto resent and the subscriber retried only %d messages: %s",
				sum.SubExtra, st.SubResent, strings.Join(again, ", "))})
	}
	for _, c := range st.Commands {
		if c.Subscriber == cObserver {
			sum.Violations = append(sum.Violations, cViolation{Invariant: "nothing refused delivered",
				Detail: fmt.Sprintf("the observer received on %s (STATE, or a group no credential names): %s", c.Topic, c.Payload)})
			continue
		}
		if !strings.Contains(c.Payload, fmt.Sprintf(`"from":%q`, c.Subscriber)) {
			sum.Violations = append(sum.Violations, cViolation{Invariant: "no device receives another's commands",
				Detail: fmt.Sprintf("%s received on %s: %s", c.Subscriber, c.Topic, c.Payload)})
		}
	}
	if st.RedisMemory > cRedisMemoryBound {
		sum.Violations = append(sum.Violations, cViolation{Invariant: "memory within bounds",
			Detail: fmt.Sprintf("Redis used_memory %s after the drain, bound %s", outMiB(st.RedisMemory), outMiB(cRedisMemoryBound))})
	}
	for name, rss := range st.RSS {
		if rss > cRSSBound {
			sum.Violations = append(sum.Violations, cViolation{Invariant: "memory within bounds",
				Detail: fmt.Sprintf("%s RSS %s, bound %s", name, outMiB(rss), outMiB(cRSSBound))})
		}
	}
	return sum
}

// cExpect is one row some ops carry, and every attempt that carried it.
type cExpect struct {
	key      string
	row      cRow
	attempts []cAttempt
	ops      []*cOp
}

// cExpectations gathers, by row identity (in the order ops first carry
// them), the attempts of every row; it counts the answers into sum and
// adds the violations an answer alone shows (a probe acknowledged).
func cExpectations(plan *cPlan, answers []cAnswer, sum *cSummary) (map[string]*cExpect, []string) {
	expects := map[string]*cExpect{}
	var keys []string
	for _, op := range plan.Ops {
		a := answers[op.ID]
		for _, o := range a.Outcomes {
			switch o {
			case ansAcked:
				sum.Acked++
				if op.Kind == "subscribed" {
					sum.SubAcked++
				}
				if op.Kind == "typed" || op.Kind == "typed-http" {
					sum.TypedAcked++
				}
				if op.Kind == "ident-mqtt" || op.Kind == "ident-http" {
					sum.IdentAcked++
				}
				if op.Kind == "ident-http" && cIdentCert(op.Client) {
					sum.IdentCertHTTP++
				}
			case ansRefused:
				sum.Refused++
			default:
				sum.Unknown++
			}
		}
		if op.Kind == "ident-probe" || op.Kind == "ident-probe-http" {
			sum.IdentProbes++
			if slices.Contains(a.Outcomes, ansRefused) {
				sum.IdentProbesRefused++
			}
		}
		if op.Refuse && slices.Contains(a.Outcomes, ansAcked) {
			v := cViolation{Invariant: "no device writes another's topics",
				Detail:   fmt.Sprintf("op %d: %s publishing to %s was acknowledged", op.ID, op.Client, op.Topic),
				Attempts: []cAttempt{{Op: op.ID, Kind: op.Kind, Outcome: ansAcked, Sent: a.Sent, At: a.At, Detail: a.Detail}}}
			if op.Kind == "ident-probe-http" {
				v.Detail = fmt.Sprintf("op %d: %s posting %s's readings to %s was acknowledged", op.ID, op.Client, op.Target, op.Path)
			}
			if cIdentIsRevoked(op.Client) {
				v.Invariant = "a revoked certificate is refused"
			}
			sum.Violations = append(sum.Violations, v)
		}
		if a.Denied != "" {
			sum.Violations = append(sum.Violations, cViolation{Invariant: "the identity edge admits the devices it loaded",
				Detail:   fmt.Sprintf("op %d: %s (%s) refused: %s", op.ID, op.Client, cProtoName(op), a.Denied),
				Attempts: []cAttempt{{Op: op.ID, Kind: op.Kind, Outcome: a.Outcomes[0], Sent: a.Sent, At: a.At, Detail: a.Detail}}})
		}
		for _, r := range op.Rows {
			out := ansUnknown
			if r.Msg < len(a.Outcomes) {
				out = a.Outcomes[r.Msg]
			}
			e := expects[r.key()]
			if e == nil {
				e = &cExpect{key: r.key(), row: r}
				expects[r.key()] = e
				keys = append(keys, r.key())
			}
			e.attempts = append(e.attempts, cAttempt{Op: op.ID, Kind: op.Kind, Outcome: out, Sent: a.Sent, At: a.At, Detail: a.Detail, Probe: op.Refuse})
			e.ops = append(e.ops, op)
		}
	}
	return expects, keys
}

// cBounds is how many rows of one reading may be stored: at least lo, at
// most hi, from its attempts' answers and the settings.
func cBounds(plan *cPlan, windows []cWindow, e *cExpect) (lo, hi, acked, unknown, mayLose, probes int) {
	// An attempt may be lost when it was answered after the snapshot and sent
	// before the kill: its XADD may have run after the snapshot (an answer
	// can arrive after the kill, for a write Redis made before it).
	inWindow := func(sent, at time.Time) bool {
		for _, w := range windows {
			if at.After(w.From) && sent.Before(w.To) {
				return true
			}
		}
		return false
	}
	for _, a := range e.attempts {
		if a.Probe {
			probes++
			continue
		}
		switch a.Outcome {
		case ansAcked:
			acked++
			if inWindow(a.Sent, a.At) {
				mayLose++
			}
		case ansUnknown:
			unknown++
		}
	}
	lo, hi = acked-mayLose, acked+unknown
	if e.row.Bad {
		return 0, 0, acked, unknown, mayLose, probes // never a row (cJudge says what an ack needs)
	}
	// Under --dedup a resend may be recognised and not stored again: but a
	// message the subscriber receives at QoS 2 bypasses --dedup.
	if plan.Dedup != "off" && cSubQoS(plan, e) != 2 {
		lo = min(lo, 1)
		// A resend of a stored reading is answered and not stored again,
		// unless a restored Redis forgot the original's key.
		if e.row.Dedupable && len(windows) == 0 {
			hi = min(hi, 1)
		}
	}
	return lo, hi, acked, unknown, mayLose, probes
}

// cSubQoS is the QoS at which Mosquitto delivers e's row to the subscriber
// (the lowest of its publishes), 0 for a row of another class.
func cSubQoS(plan *cPlan, e *cExpect) byte {
	var q byte
	for _, op := range e.ops {
		if op.Kind != "subscribed" {
			return 0
		}
		if d := cSubDelivery(op.QoS, plan.SubQoS); q == 0 || d < q {
			q = d
		}
	}
	return q
}

// cJudge is the verdict on one reading: its stored rows against its bounds
// and the values sent. deadLettered: missing rows, but a dead letter holds
// the message. extra: rows of a subscribed reading delivered at QoS 1
// stored beyond its publishes, which check weighs against what Mosquitto
// resent and the subscriber retried (none under --dedup: the reading has
// an identity, unless a Redis restore forgot it).
func cJudge(plan *cPlan, windows []cWindow, st cStore, e *cExpect, got []cStored) (vs []cViolation, deadLettered bool, extra int, underDedup bool) {
	lo, hi, acked, unknown, mayLose, probes := cBounds(plan, windows, e)
	deduped := plan.Dedup != "off" && e.row.Dedupable && len(windows) == 0
	if cSubQoS(plan, e) == 1 && !deduped && acked+unknown > 0 && len(got) > hi {
		extra, hi = len(got)-hi, len(got)
		underDedup = deduped
	}
	v := cViolation{Key: e.key, Attempts: e.attempts, Stored: got}
	for _, s := range got {
		if s.Value != e.row.Value || !s.TS.Equal(e.row.TS.Truncate(time.Microsecond)) || s.Seq != e.row.Seq || e.row.Table != "" && s.Extra != e.row.Tag {
			v.Invariant, v.Detail = "stored with the values sent", fmt.Sprintf("sent %v at %s, stored %v at %s", e.row.Value, e.row.TS.Format(time.RFC3339Nano), s.Value, s.TS.Format(time.RFC3339Nano))
			if e.row.Table != "" {
				v.Detail = fmt.Sprintf("sent v %v, time %s, seq %d, cid %q; stored v %v, time %s, seq %d, extra cid %q", e.row.Value, e.row.TS.Format(time.RFC3339Nano), e.row.Seq, e.row.Tag,
					s.Value, s.TS.Format(time.RFC3339Nano), s.Seq, s.Extra)
			}
			vs = append(vs, v)
			break
		}
	}
	if e.row.Bad {
		// Acknowledged: only an MQTT 3.1.1 publish, kept whole as an edge
		// dead letter (the protocol cannot refuse; lost only within a
		// restore's window); MQTT 5 and HTTP refuse.
		var by []string
		for i, a := range e.attempts {
			if a.Outcome == ansAcked && e.ops[i].Proto != 3 {
				by = append(by, fmt.Sprintf("op %d (%s)", a.Op, cProtoName(e.ops[i])))
			}
		}
		b := v
		switch {
		case len(by) > 0:
			b.Invariant, b.Detail = "a message its table refuses is refused", "acknowledged by "+strings.Join(by, ", ")
			vs = append(vs, b)
		case acked > mayLose && !cDeadLettered(st, e.row, e.ops):
			b.Invariant, b.Detail = "a message its table refuses is refused", "acknowledged over MQTT 3.1.1 and found in no edge dead letter"
			vs = append(vs, b)
		}
	}
	switch {
	case len(got) > hi && probes > 0 && cIdentIsRevoked(e.row.Device):
		v.Invariant, v.Detail = "a revoked certificate is refused", fmt.Sprintf("%d rows of a reading its revoked certificate's device published", len(got))
	case len(got) > hi && probes > 0:
		v.Invariant, v.Detail = "no device changes another's data", fmt.Sprintf("%d rows of a reading published under another device's id", len(got))
	case len(got) > hi && e.row.Bad:
		v.Invariant, v.Detail = "nothing stored of a message its table refuses", fmt.Sprintf("%d rows of a message whose seq is not a bigint", len(got))
	case len(got) > hi && acked == 0 && unknown == 0:
		v.Invariant, v.Detail = "nothing refused stored", fmt.Sprintf("%d rows of a reading every attempt of which was refused", len(got))
	case len(got) > hi:
		v.Invariant, v.Detail = "nothing stored twice", fmt.Sprintf("%d rows, at most %d allowed (%d acked, %d unknown, dedup %s)", len(got), hi, acked, unknown, plan.Dedup)
	case len(got) < lo && (e.row.Table == "" || e.row.Old) && cDeadLettered(st, e.row, e.ops):
		return vs, true, extra, underDedup
	case len(got) < lo && e.row.Old:
		v.Invariant, v.Detail = "acknowledged means stored (retention)", fmt.Sprintf("%d rows, %d acknowledged: a reading older than --retention was acknowledged and then deleted by retention", len(got), acked)
	case len(got) < lo:
		v.Invariant, v.Detail = "acknowledged means stored", fmt.Sprintf("%d rows, want at least %d (%d acked, %d of them between a snapshot and the restore)", len(got), lo, acked, mayLose)
	default:
		return vs, false, extra, underDedup
	}
	return append(vs, v), false, extra, underDedup
}

// cIdentDevice says whether dev is a device of the identity class (ci..,
// cr.., cx..).
func cIdentDevice(dev string) bool {
	return len(dev) > 2 && (dev[:2] == "ci" || dev[:2] == "cr" || dev[:2] == "cx")
}

// cProtoName names the path an op took, for a violation's detail.
func cProtoName(op *cOp) string {
	switch {
	case op.Proto == 3:
		return "MQTT 3.1.1"
	case op.Proto == 5:
		return "MQTT 5"
	}
	return "HTTP"
}

// cIgnored says which stored rows the checker does not judge: the fences,
// Sparkplug births and deaths (metric sparkplug/...), bdSeq, and the values
// births carry (-1), none of which an op identifies.
func cIgnored(s cStored) bool {
	if s.Device == cFenceDevice {
		return true // the subscriber's fences (cEnv.subFence)
	}
	if !strings.HasPrefix(s.Device, cSpbGroup+"/") {
		return false
	}
	return strings.HasPrefix(s.Metric, "sparkplug/") || s.Metric == "bdSeq" || s.Value == -1
}

// cDeadLettered says whether every op that carried row r has a dead letter
// holding it (its tag, or for Sparkplug its value's 8 bytes).
func cDeadLettered(st cStore, r cRow, ops []*cOp) bool {
	if st.DeadLetters == nil {
		return false
	}
	needle := []byte(strconv.Quote(r.Tag))
	switch {
	case strings.HasPrefix(r.Device, cSpbGroup+"/"):
		bits := math.Float64bits(r.Value)
		needle = make([]byte, 8) // the double_value's fixed64, little-endian
		for i := range needle {
			needle[i] = byte(bits >> (8 * i))
		}
	case ops[0].Kind == "fast" || ops[0].Kind == "fast-twins":
		needle = []byte(`"id":` + r.Tag)
	}
	ok, err := st.DeadLetters(needle)
	return err == nil && ok
}

// cRetry runs f until it succeeds or fails with an error that is not
// transient (PostgreSQL starting or shutting down, too many connections, a
// serialization failure or deadlock, a lost connection), for at most 2
// minutes.
func cRetry(ctx context.Context, f func(context.Context) error) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := f(ctx)
		if err == nil || !cTransient(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func cTransient(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "53") || strings.HasPrefix(pe.Code, "57P") ||
			pe.Code == "40001" || pe.Code == "40P01"
	}
	var ne net.Error
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.As(err, &ne) || strings.Contains(err.Error(), "failed to connect")
}

// cReadRows reads every row of readings (the seed's own database).
func cReadRows(ctx context.Context, dbURL string) ([]cStored, error) {
	var out []cStored
	err := cRetry(ctx, func(ctx context.Context) error {
		out = out[:0]
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		rows, err := conn.Query(ctx, `SELECT device_id, metric, reading, ts,
			coalesce(payload->>'cid', payload->>'id', '') FROM readings`)
		if err != nil {
			return err
		}
		var s cStored
		_, err = pgx.ForEachRow(rows, []any{&s.Device, &s.Metric, &s.Value, &s.TS, &s.Tag}, func() error {
			if strings.HasPrefix(s.Device, cSpbGroup+"/") || strings.HasPrefix(s.Device, cOtherGroup+"/") {
				s.Tag = strconv.FormatFloat(s.Value, 'g', -1, 64)
			}
			s.TS = s.TS.UTC()
			out = append(out, s)
			return nil
		})
		return err
	})
	return out, err
}

// cReadTyped reads every row of the typed table ctyped (the seed's own
// database; the bridge created it at its start).
func cReadTyped(ctx context.Context, dbURL string) ([]cStored, error) {
	var out []cStored
	err := cRetry(ctx, func(ctx context.Context) error {
		out = out[:0]
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		rows, err := conn.Query(ctx, `SELECT coalesce(device_id, ''), time, seq, coalesce(v, 'NaN'), coalesce(msg_id, ''),
			coalesce(extra->>'cid', '') FROM `+cTypedTable)
		if err != nil {
			return err
		}
		s := cStored{Table: cTypedTable}
		_, err = pgx.ForEachRow(rows, []any{&s.Device, &s.TS, &s.Seq, &s.Value, &s.Tag, &s.Extra}, func() error {
			s.TS = s.TS.UTC()
			out = append(out, s)
			return nil
		})
		return err
	})
	return out, err
}

// cEdgeDeadLetters returns a search of the edge dead letters
// (readings_rejected rows with source 'edge', migration 008) for a needle in
// their raw payload, which holds the message byte for byte.
func cEdgeDeadLetters(ctx context.Context, dbURL string) func([]byte) (bool, error) {
	return func(needle []byte) (bool, error) {
		var n int64
		err := cRetry(ctx, func(ctx context.Context) error {
			conn, err := pgx.Connect(ctx, dbURL)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			return conn.QueryRow(ctx, `SELECT count(*) FROM readings_rejected
				WHERE source = 'edge' AND position($1::bytea IN raw) > 0`, needle).Scan(&n)
		})
		return n > 0, err
	}
}
