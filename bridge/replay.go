package bridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
)

// Replays of dead letters (`firehose rejected replay`, see ingest.ReplayValues).
// A replay entry has no ingest.FieldBody, so it reaches commit among the
// batch's bad entries; replays takes it out of them, claims the row it names
// and writes its reading, all in the batch's transaction: the claim, the
// reading and the checkpoint commit together or not at all, and a row is
// claimed once, so it lands once however many entries replay it.

// lockRejected locks the rows that replays name, in id order so that two
// bridges claiming rows of each other's batches cannot deadlock, and says
// which are claimed already.
const lockRejected = `SELECT id, replayed_at IS NOT NULL FROM readings_rejected
WHERE id = ANY($1) ORDER BY id FOR UPDATE`

// claimRejected marks rows as replayed by entries of stream $1.
const claimRejected = `UPDATE readings_rejected r
SET replayed_at = now(), replayed_stream = $1, replayed_entry = u.entry
FROM unnest($2::bigint[], $3::text[]) AS u(id, entry)
WHERE r.id = u.id AND r.replayed_at IS NULL`

var rejectedReplayColumns = []string{"stream", "entry_id", "version", "raw", "error", "replay_of"}

// replayed is one replay entry of the batch.
type replayed struct {
	e  *entry
	rp ingest.Replay
}

// replays handles the replay entries among bad, the batch's bad entries, in
// tx after the batch's COPY, and returns bad without them. A replay whose row
// is claimed lands in readings; one whose row was claimed already (by an
// earlier entry, in this batch or before) is left out; one that PostgreSQL
// refuses again, or that names no row, becomes a new row of
// readings_rejected whose replay_of names the row it replayed. res.decodeBad
// keeps counting only what is recorded as rejected.
func (s *session) replays(ctx context.Context, tx pgx.Tx, bad []*entry, res *commitResult) ([]*entry, error) {
	var cand []*entry
	for _, e := range bad {
		// A cheap test on what the session kept of an entry without a body
		// (a dump of its fields); the fields themselves are read below.
		if e.dump && strings.Contains(e.raw, ingest.FieldReplayOf) {
			cand = append(cand, e)
		}
	}
	if len(cand) == 0 {
		return bad, nil
	}
	fields, err := s.entryFields(ctx, cand)
	if err != nil {
		return nil, err
	}
	var reps []replayed
	isReplay := map[*entry]bool{}
	for _, e := range cand {
		values, ok := fields[e.id]
		if !ok {
			// Gone from the stream since it was read (Redis lost it): keep it
			// as it is; its row is not claimed and can be replayed again.
			e.bad = fmt.Errorf("%w: replay entry no longer in the stream", ingest.ErrMalformedReplay)
			continue
		}
		rp, ok, err := ingest.ParseReplay(values)
		switch {
		case !ok:
			continue
		case err != nil:
			e.bad = err
			continue
		}
		reps = append(reps, replayed{e: e, rp: rp})
		isReplay[e] = true
	}
	rest := bad[:0:0]
	for _, e := range bad {
		if !isReplay[e] {
			rest = append(rest, e)
		}
	}
	if len(reps) == 0 {
		return rest, nil
	}

	claimed, err := lockRows(ctx, tx, reps)
	if err != nil {
		return nil, err
	}
	var (
		land, again []replayed
		ids         []int64
		entries     []string
		dups        int
	)
	seen := map[int64]bool{}
	for _, r := range reps {
		done, exists := claimed[r.rp.Of]
		switch {
		case seen[r.rp.Of] || done:
			dups++
			continue
		}
		seen[r.rp.Of] = true
		if !exists {
			r.e.bad = fmt.Errorf("readings_rejected has no row %d", r.rp.Of)
			again = append(again, r)
			continue
		}
		ids = append(ids, r.rp.Of)
		entries = append(entries, r.e.id)
		if _, batched := ingest.ItemCodec(r.rp.Version); batched {
			// The readings of one replayed message (an edge dead letter):
			// each lands, or is refused again as a row of its own.
			land, again = expandReplay(r, land, again)
			continue
		}
		if r.e.r, r.e.bad = decodeItem(r.rp.Version, r.rp.Body); r.e.bad != nil {
			again = append(again, r)
			continue
		}
		land = append(land, r)
	}
	if len(ids) > 0 {
		tag, err := tx.Exec(ctx, claimRejected, s.key, ids, entries)
		if err != nil {
			return nil, fmt.Errorf("mark %d rejected rows replayed: %w", len(ids), err)
		}
		if int(tag.RowsAffected()) != len(ids) {
			// The rows are locked and were unclaimed: this cannot happen
			// unless something changed them under the lock.
			return nil, fmt.Errorf("mark %d rejected rows replayed: %d marked", len(ids), tag.RowsAffected())
		}
	}
	rows := make([]*entry, len(land))
	for i := range land {
		rows[i] = land[i].e
	}
	tgts := targets(rows)
	refused, err := isolateAll(ctx, tx, tgts)
	if err != nil {
		return nil, err
	}
	for _, t := range tgts {
		res.landed(t)
	}
	for _, r := range land {
		if r.e.bad != nil { // set by isolate
			again = append(again, r)
		}
	}
	if len(again) > 0 {
		src := &replayRejectSource{stream: s.key, rows: again}
		if _, err := tx.CopyFrom(ctx, rejectedTable, rejectedReplayColumns, src); err != nil {
			return nil, fmt.Errorf("record %d refused replays: %w", len(again), err)
		}
	}
	res.replayed = len(land) - len(refused)
	// Of the replay entries, only what is refused again stays recorded as
	// rejected.
	res.decodeBad += len(again) - len(reps)
	s.log.Debug("replays of rejected entries in this batch", "rows", len(land)-len(refused),
		"duplicates", dups, "refused_again", len(again))
	return rest, nil
}

// lockRows locks the rows the replays name and reports, for each that
// exists, whether it is claimed already.
func lockRows(ctx context.Context, tx pgx.Tx, reps []replayed) (map[int64]bool, error) {
	ids := make([]int64, len(reps))
	for i, r := range reps {
		ids[i] = r.rp.Of
	}
	rows, err := tx.Query(ctx, lockRejected, ids)
	if err != nil {
		return nil, fmt.Errorf("lock %d rejected rows: %w", len(ids), err)
	}
	claimed := map[int64]bool{}
	var id int64
	var done bool
	_, err = pgx.ForEachRow(rows, []any{&id, &done}, func() error {
		claimed[id] = done
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lock %d rejected rows: %w", len(ids), err)
	}
	return claimed, nil
}

// entryFields reads the fields of entries of the session's stream, by id, in
// one round trip. The entries are still in the stream: it is trimmed only
// below the checkpoint, after their batch commits.
func (s *session) entryFields(ctx context.Context, es []*entry) (map[string]map[string]any, error) {
	pipe := s.b.rdb.Pipeline()
	cmds := make([]*redis.XMessageSliceCmd, len(es))
	for i, e := range es {
		cmds[i] = pipe.XRangeN(ctx, s.key, e.id, e.id, 1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read %d replay entries of %s: %w", len(es), s.key, err)
	}
	out := make(map[string]map[string]any, len(es))
	for _, c := range cmds {
		for _, m := range c.Val() {
			out[m.ID] = m.Values
		}
	}
	return out, nil
}

// replayRejectSource feeds refused replays to COPY into readings_rejected:
// the raw entry is the replayed body, so the new row can be repaired and
// replayed in turn, and replay_of names the row it replayed.
type replayRejectSource struct {
	stream string
	rows   []replayed
	i      int
}

func (s *replayRejectSource) Next() bool {
	s.i++
	return s.i <= len(s.rows)
}

func (s *replayRejectSource) Values() ([]any, error) {
	r := s.rows[s.i-1]
	var version any // NULL when the entry named none
	if r.rp.Version != "" {
		version = cleanText(r.rp.Version, 64)
	}
	msg := "replay of rejected row " + strconv.FormatInt(r.rp.Of, 10) + ": " + r.e.bad.Error()
	return []any{s.stream, r.e.id, version, []byte(r.rp.Body), cleanText(msg, 2000), r.rp.Of}, nil
}

func (s *replayRejectSource) Err() error { return nil }

// expandReplay splits a replay whose body is a batch (version 2 or 4: the
// readings an edge dead letter resolved to) into one replay per reading, on
// entries of their own, and adds each to land, or to again when it does not
// decode; a batch whose framing is broken goes to again whole.
func expandReplay(r replayed, land, again []replayed) ([]replayed, []replayed) {
	parts, err := ingest.SplitBatch(r.rp.Body)
	if err != nil {
		r.e.bad = err
		return land, append(again, r)
	}
	item, _ := ingest.ItemCodec(r.rp.Version)
	for i, p := range parts {
		e := &entry{id: r.e.id, item: i + 1, version: item, raw: p}
		e.r, e.bad = decodeItem(item, p)
		one := replayed{e: e, rp: ingest.Replay{Of: r.rp.Of, Version: item, Body: p}}
		if e.bad != nil {
			again = append(again, one)
		} else {
			land = append(land, one)
		}
	}
	return land, again
}
