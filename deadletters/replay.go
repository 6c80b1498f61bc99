package deadletters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/stream"
)

// A replay is a stream entry naming its row (ingest.ReplayValues); the
// bridge claims the row in the transaction that commits the entry, so a row
// lands once however often it is sent: a replay may crash, run twice or run
// beside another without a reading landing twice.

// Batch is how many replay entries one pipelined round trip carries, and how
// many rows one page of PendingPage reads.
const Batch = 500

// Resolver turns an edge dead letter into the readings its message makes
// now (the MQTT edges' decode path: mqttmsg.Resolver).
type Resolver interface {
	Resolve(ctx context.Context, d ingest.DeadLetter) ([]ingest.Reading, error)
}

// Job is one row to replay and the readings it sends: one, or those an edge
// dead letter resolved to.
type Job struct {
	Row      int64
	Readings []ingest.Reading
}

// Tally is what a replay run did.
type Tally struct {
	Sent    []int64          // rows whose replay entry Redis stored, in order
	Entries map[int64]string // row -> "stream entry" of the replay this run sent
	Skipped int              // rows that need a repair
}

// NewTally is an empty tally.
func NewTally() *Tally { return &Tally{Entries: map[int64]string{}} }

// PlanIDs plans the replay of the rows ids of the deployment whose streams
// begin with prefix (StreamPrefix; named prefixName in what it says), all or
// none: if any of them cannot be replayed (no such row, another
// deployment's, replayed already, needs a repair) the error says why for
// each. repair, when not nil, is the repaired reading of the one row.
func PlanIDs(ctx context.Context, pg *pgxpool.Pool, ids []int64, prefix, prefixName string, repair []byte, lim ingest.Limits, res Resolver) ([]Job, error) {
	rows, err := ByID(ctx, pg, ids)
	if err != nil {
		return nil, err
	}
	byID := map[int64]*Row{}
	for i := range rows {
		byID[rows[i].ID] = &rows[i]
	}
	var jobs []Job
	var problems []string
	seen := map[int64]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		r, ok := byID[id]
		if !ok {
			problems = append(problems, fmt.Sprintf("row %d: readings_rejected has no such row (see firehose rejected list)", id))
			continue
		}
		if !strings.HasPrefix(r.Stream, prefix) {
			problems = append(problems, fmt.Sprintf("row %d: it was rejected from stream %s, not from deployment %q: give its --redis-prefix",
				id, Printable(r.Stream, 80), prefixName))
			continue
		}
		rs, err := Plan(ctx, r, repair, lim, res)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		jobs = append(jobs, Job{Row: id, Readings: rs})
	}
	switch {
	case len(problems) == 1 && len(seen) == 1:
		return nil, errors.New(problems[0])
	case len(problems) > 0:
		return nil, fmt.Errorf("nothing replayed: %s", strings.Join(problems, "; "))
	}
	return jobs, nil
}

// pendingWhere selects the rows of a deployment ($1, its StreamPrefix) not
// yet replayed, rejected since $2 (null: any time).
const pendingWhere = `WHERE starts_with(r.stream, $1) AND r.replayed_at IS NULL AND ($2::timestamptz IS NULL OR r.rejected_at >= $2)`

func sinceArg(since time.Time) *time.Time {
	if since.IsZero() {
		return nil
	}
	return &since
}

// CountPending counts the rows of the deployment not yet replayed,
// rejected since since (zero: any time).
func CountPending(ctx context.Context, pg *pgxpool.Pool, prefix string, since time.Time) (int64, error) {
	var total int64
	if err := pg.QueryRow(ctx, "SELECT count(*) FROM readings_rejected r "+pendingWhere, prefix, sinceArg(since)).Scan(&total); err != nil {
		return 0, SchemaHint(fmt.Errorf("count rows to replay: %w", err))
	}
	return total, nil
}

// PendingPage reads up to Batch rows of CountPending's, with ids above
// after, in id order.
func PendingPage(ctx context.Context, pg *pgxpool.Pool, prefix string, since time.Time, after int64) ([]Row, error) {
	return query(ctx, pg, pendingWhere+" AND r.id > $3 ORDER BY r.id LIMIT $4", prefix, sinceArg(since), after, Batch)
}

// Plan is the readings that replay row r: the row's entry decoded, or
// repair (a JSON object) when given, normalized and validated as an edge
// would; for an edge dead letter without a repair, the readings its message
// resolves to now through the broker's decode path (res). The error says
// why the row cannot be replayed and what to do.
func Plan(ctx context.Context, r *Row, repair []byte, lim ingest.Limits, res Resolver) ([]ingest.Reading, error) {
	if r.Edge() && r.ReplayedAt == nil && repair == nil {
		rs, err := res.Resolve(ctx, r.DeadLetter())
		if err != nil {
			return nil, fmt.Errorf("row %d: its %s message still makes no readings (%v): replay it once it resolves (a Sparkplug B DATA once its birth is known), or repair it with --id %d --reading '{...}'",
				r.ID, Printable(r.DeadLetter().Kind, 20), err, r.ID)
		}
		if len(rs) == 0 {
			return nil, fmt.Errorf("row %d: its message resolves to no readings: nothing to replay", r.ID)
		}
		return rs, nil
	}
	rd, err := PlanReading(r, repair, lim)
	if err != nil {
		return nil, err
	}
	return []ingest.Reading{rd}, nil
}

// PlanReading is the one reading that replays row r (see Plan).
func PlanReading(r *Row, repair []byte, lim ingest.Limits) (ingest.Reading, error) {
	if r.ReplayedAt != nil {
		msg := fmt.Sprintf("row %d was replayed already, at %s", r.ID, r.ReplayedAt.UTC().Format(time.RFC3339))
		if r.ReplayedStream != nil && r.ReplayedEntry != nil {
			msg += fmt.Sprintf(" (entry %s of %s)", *r.ReplayedEntry, *r.ReplayedStream)
		}
		if r.RefusedAs != nil {
			return ingest.Reading{}, fmt.Errorf("%s, and refused again as row %d: repair and replay row %d instead", msg, *r.RefusedAs, *r.RefusedAs)
		}
		return ingest.Reading{}, fmt.Errorf("%s: a row is replayed at most once", msg)
	}
	orig, derr := r.Decoded()
	if r.Edge() {
		derr = errors.New("an edge dead letter")
	}
	if derr == nil && orig.Row != nil && repair != nil {
		// --reading makes a readings row: the row would land in readings,
		// not in its table.
		return ingest.Reading{}, fmt.Errorf("row %d is a row of table %s, which --reading cannot repair: fix the table (firehose migrate --config) and replay the row as it is",
			r.ID, orig.Row.Shape.Table)
	}
	var rd ingest.Reading
	if repair != nil {
		if err := ingest.ParseObject(repair, &rd); err != nil {
			return ingest.Reading{}, fmt.Errorf("row %d: --reading: %v", r.ID, err)
		}
		// The time of receipt stays the original's; for an entry that does
		// not decode, when it was rejected is the closest record of it.
		rd.ReceivedAt = r.RejectedAt
		switch {
		case r.Edge() && r.ReceivedAt != nil:
			rd.ReceivedAt = *r.ReceivedAt
		case derr == nil:
			rd.ReceivedAt = orig.ReceivedAt
		}
	} else {
		if derr != nil {
			return ingest.Reading{}, fmt.Errorf("row %d does not decode (%v): replay it with its repair, --id %d --reading '{\"device_id\":\"...\",\"reading\":...,\"ts\":\"...\"}'",
				r.ID, derr, r.ID)
		}
		rd = orig
	}
	rd.Normalize()
	err := rd.Validate(lim)
	if err == nil && rd.Payload != nil && (!json.Valid(rd.Payload) || rd.Payload[0] != '{') {
		// Validate trusts the edges' parser to have built a JSON object;
		// a decoded entry was built by no parser.
		err = errors.New("payload: the extra fields are not a JSON object")
	}
	if err != nil {
		how := "repair it with --id " + strconv.FormatInt(r.ID, 10) + " --reading '{...}'"
		if repair != nil {
			how = "fix the --reading"
		}
		return ingest.Reading{}, fmt.Errorf("row %d: the edges would refuse this reading (%v): %s", r.ID, err, how)
	}
	return rd, nil
}

// CheckDeployment makes sure the replays go to this database's streams: the
// shard count Redis recorded for the prefix is streams.Count (else a
// device's replay would go to another shard than its readings), and no
// shard is claimed by another database.
func CheckDeployment(ctx context.Context, pg *pgxpool.Pool, rdb redis.UniversalClient, streams stream.Streams) error {
	got, ok, err := streams.RecordedShards(ctx, rdb)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("redis has no deployment %q (no %s): check --redis-prefix and --redis", streams.Prefix, streams.MetaKey())
	case got != strconv.Itoa(streams.Len()):
		return fmt.Errorf("deployment %q has %s shards, and this command was given --shards %d: replays would go to the wrong streams; give --shards %s",
			streams.Prefix, got, streams.Len(), got)
	}
	var id string
	if err := pg.QueryRow(ctx, "SELECT id::text FROM firehose_deployment").Scan(&id); err != nil {
		return SchemaHint(fmt.Errorf("read the deployment id of the database: %w", err))
	}
	for shard := range streams.Len() {
		m, err := stream.ReadShardMeta(ctx, rdb, streams, shard)
		if err != nil {
			return err
		}
		if m.Deployment != "" && m.Deployment != id {
			return fmt.Errorf("stream %s belongs to another database (deployment %s; this one is %s): check --postgres and --redis-prefix",
				streams.Key(shard), m.Deployment, id)
		}
	}
	return nil
}

// Send writes the jobs' replay entries to their shard streams, Batch at a
// time, and records in t what Redis stored. On a failure it says how far it
// got: sending again is safe.
func Send(ctx context.Context, rdb redis.UniversalClient, streams stream.Streams, jobs []Job, t *Tally) error {
	for len(jobs) > 0 {
		batch := jobs[:min(len(jobs), Batch)]
		jobs = jobs[len(batch):]
		replays := make([]stream.Replay, len(batch))
		for i := range batch {
			replays[i] = stream.Replay{Row: batch[i].Row, Readings: batch[i].Readings}
		}
		entries, execErr := stream.WriteReplays(ctx, rdb, streams, replays)
		for i, e := range entries {
			if e != "" {
				t.Sent = append(t.Sent, batch[i].Row)
				t.Entries[batch[i].Row] = e
			}
		}
		if execErr != nil {
			return fmt.Errorf("write replays to Redis: %w; %d replays were sent before it failed; "+
				"run the command again: a row is replayed once however often it is sent", execErr, len(t.Sent))
		}
	}
	return nil
}

// CountReplayed counts the rows of ids the bridge has marked replayed.
func CountReplayed(ctx context.Context, pg *pgxpool.Pool, ids []int64) (int, error) {
	var n int
	if err := pg.QueryRow(ctx, "SELECT count(*) FROM readings_rejected WHERE id = ANY($1) AND replayed_at IS NOT NULL", ids).Scan(&n); err != nil {
		return 0, fmt.Errorf("read how the replays ended: %w", err)
	}
	return n, nil
}

// Outcome is how the replays of a run ended.
type Outcome struct {
	Landed int // rows whose replay landed in readings
	// ByOthers is how many of Landed another replay of the same row landed
	// (sent before or beside this run).
	ByOthers int
	Refused  []Refusal // rows whose replay the bridge refused again
	Waiting  int       // replays the bridge has not committed yet
}

// Refusal is a row whose replay the bridge refused again, as row As.
type Refusal struct{ Row, As int64 }

// Outcomes reads how the replays t sent ended.
func Outcomes(ctx context.Context, pg *pgxpool.Pool, t *Tally) (Outcome, error) {
	rows, err := query(ctx, pg, "WHERE r.id = ANY($1) AND r.replayed_at IS NOT NULL ORDER BY r.id", t.Sent)
	if err != nil {
		return Outcome{}, err
	}
	var o Outcome
	for i := range rows {
		r := &rows[i]
		if r.RefusedAs != nil {
			o.Refused = append(o.Refused, Refusal{Row: r.ID, As: *r.RefusedAs})
			continue
		}
		o.Landed++
		if r.ReplayedStream != nil && r.ReplayedEntry != nil && t.Entries[r.ID] != *r.ReplayedStream+" "+*r.ReplayedEntry {
			o.ByOthers++
		}
	}
	o.Waiting = len(t.Sent) - len(rows)
	return o, nil
}

// Replayer sends the replays of one deployment's rows.
type Replayer struct {
	PG       *pgxpool.Pool
	Redis    redis.UniversalClient
	Streams  stream.Streams // with its layout loaded
	Limits   ingest.Limits  // the edges' limits a replayed reading must pass
	Resolver Resolver       // for edge dead letters
	// Skipped, when not nil, is told of each row ReplayPending skips, with
	// why (it needs a repair); Progress, when not nil, of each page done.
	Skipped  func(error)
	Progress func(done, total int64)
}

// ReplayPending replays every row of the deployment not yet replayed
// (rejected since since; zero: any time), a page at a time; rows that need
// a repair are skipped (t.Skipped, r.Skipped).
func (r *Replayer) ReplayPending(ctx context.Context, since time.Time, t *Tally) error {
	prefix := StreamPrefix(r.Streams)
	total, err := CountPending(ctx, r.PG, prefix, since)
	if err != nil {
		return err
	}
	var after, done int64
	for {
		rows, err := PendingPage(ctx, r.PG, prefix, since, after)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		jobs := make([]Job, 0, len(rows))
		for i := range rows {
			rs, err := Plan(ctx, &rows[i], nil, r.Limits, r.Resolver)
			if err != nil {
				if r.Skipped != nil {
					r.Skipped(err)
				}
				t.Skipped++
				continue
			}
			jobs = append(jobs, Job{Row: rows[i].ID, Readings: rs})
		}
		if err := Send(ctx, r.Redis, r.Streams, jobs, t); err != nil {
			return err
		}
		after = rows[len(rows)-1].ID
		done += int64(len(rows))
		if r.Progress != nil {
			r.Progress(done, total)
		}
	}
}

// WaitReplayed waits up to wait for the bridge to commit the replays t
// sent, polling every 200 ms and telling progress (when not nil) how many
// it has, then reads how they ended. Interrupted (ctx ended), it says how
// far the bridge got.
func (r *Replayer) WaitReplayed(ctx context.Context, t *Tally, wait time.Duration, progress func(committed int)) (Outcome, error) {
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		n, err := CountReplayed(ctx, r.PG, t.Sent)
		if err != nil {
			return Outcome{}, err
		}
		if n == len(t.Sent) || time.Now().After(deadline) {
			break
		}
		if progress != nil {
			progress(n)
		}
		select {
		case <-ctx.Done():
			return Outcome{}, fmt.Errorf("interrupted while waiting for the bridge: %d of %d replays committed; the others are in the streams and land once", n, len(t.Sent))
		case <-tick.C:
		}
	}
	return Outcomes(ctx, r.PG, t)
}
