package bridge

import (
	"encoding/binary"
	"strconv"
	"testing"
	"time"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// addBatch writes rs as one batch entry (version 2) with its count, as the
// producer does, and counts them in the shard's backlog counter.
func (e *env) addBatch(shard int, rs ...ingest.Reading) string {
	e.t.Helper()
	ps := make([]*ingest.Reading, len(rs))
	for i := range rs {
		ps[i] = &rs[i]
	}
	return e.addBatchBody(shard, len(rs), ingest.AppendBatch(nil, ps))
}

func (e *env) addBatchBody(shard, n int, body []byte) string {
	e.t.Helper()
	id := e.xadd(e.streams.Key(shard), ingest.FieldVersion, ingest.CodecBatch, ingest.FieldCount, n, ingest.FieldBody, body)
	if err := e.rdb.HIncrBy(e.t.Context(), e.streams.ShardMetaKey(shard), stream.MetaBacklog, int64(n)).Err(); err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) backlogCounter(shard int) int64 {
	n, _ := e.rdb.HGet(e.t.Context(), e.streams.ShardMetaKey(shard), stream.MetaBacklog).Int64()
	return n
}

// TestIntegrationMixedStreamOfBatchAndSingleEntries: a stream holding
// version-1 entries (older edges, replays), batch entries and broken ones
// lands every good reading exactly once. A reading of a batch that does not
// decode, or that PostgreSQL refuses, goes to readings_rejected alone, with
// its own version-1 body and "<entry>/<position>", while its neighbours
// commit; a batch whose framing is broken is rejected whole. The backlog
// counter is counted down to 0 by the trims.
func TestIntegrationMixedStreamOfBatchAndSingleEntries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.add(reading("mix", 1))
	e.addBatch(0, reading("mix", 2), reading("mix", 3), reading("mix", 4))
	e.add(reading("mix", 5))

	// A batch whose second reading's own bytes are corrupt.
	good, bad := reading("mix", 6), reading("mix", 7)
	one := ingest.AppendEncode(nil, &good)
	broken := append([]byte{0x7f}, ingest.AppendEncode(nil, &bad)[1:]...)
	third := reading("mix", 8)
	tail := ingest.AppendEncode(nil, &third)
	body := binary.AppendUvarint(nil, 3)
	for _, p := range [][]byte{one, broken, tail} {
		body = binary.AppendUvarint(body, uint64(len(p)))
		body = append(body, p...)
	}
	corruptItem := e.addBatchBody(0, 3, body)

	// A batch with a reading PostgreSQL refuses (jsonb has no \u0000).
	refused := reading("mix", 10)
	refused.Payload = []byte(`{"s":"\u0000"}`)
	refusedEntry := e.addBatch(0, reading("mix", 9), refused, reading("mix", 11))

	// A batch whose framing is broken: rejected whole.
	framing := ingest.AppendBatch(nil, []*ingest.Reading{&good})
	e.addBatchBody(0, 1, framing[:len(framing)-2])

	e.addBatch(0, reading("mix", 12))
	e.start(Config{BatchSize: 5000, BatchAge: 50 * time.Millisecond})

	testenv.Eventually(t, 10*time.Second, func() bool {
		return e.count("SELECT count(*) FROM readings")+e.count("SELECT count(*) FROM readings_rejected") >= 10+3
	}, "the mixed stream did not commit")
	for _, seq := range []int{1, 2, 3, 4, 5, 6, 8, 9, 11, 12} {
		if n := e.count("SELECT count(*) FROM readings WHERE device_id = 'mix' AND payload->>'seq' = $1", itoa(seq)); n != 1 {
			t.Errorf("reading %d landed %d times, want once", seq, n)
		}
	}
	if n := e.count("SELECT count(*) FROM readings"); n != 10 {
		t.Errorf("%d rows in readings, want 10", n)
	}
	type rej struct {
		entry, version string
		raw            []byte
	}
	rows, err := e.pg.Query(t.Context(), "SELECT entry_id, coalesce(version, ''), raw FROM readings_rejected ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var got []rej
	for rows.Next() {
		var r rej
		if err := rows.Scan(&r.entry, &r.version, &r.raw); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if len(got) != 3 {
		t.Fatalf("readings_rejected has %d rows (%v), want 3", len(got), got)
	}
	byEntry := map[string]rej{}
	for _, r := range got {
		byEntry[r.entry] = r
	}
	if r, ok := byEntry[corruptItem+"/2"]; !ok || r.version != ingest.CodecVersion || string(r.raw) != string(broken) {
		t.Errorf("the corrupt reading of a batch: %+v, want entry %s/2, version 1, its own bytes", byEntry, corruptItem)
	}
	r, ok := byEntry[refusedEntry+"/2"]
	if !ok || r.version != ingest.CodecVersion {
		t.Fatalf("the refused reading of a batch: %+v, want entry %s/2, version 1", byEntry, refusedEntry)
	}
	// Replayable as it is: its raw form is the reading alone.
	if back, err := ingest.Decode(r.version, string(r.raw)); err != nil || back.Value != refused.Value || string(back.Payload) != string(refused.Payload) {
		t.Errorf("raw of the refused reading decodes to %+v, %v; want the reading", back, err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return e.streamLen() == 0 && e.backlogCounter(0) == 0 },
		"stream or backlog counter not counted down: %d entries, counter %d", e.streamLen(), e.backlogCounter(0))
}

// TestIntegrationBacklogCounterCountsReadings: while batch entries wait, the
// shard's counter holds their readings, not their entries; each commit's
// trim takes its readings off, including, at a session's start, what the
// previous owner committed and did not trim.
func TestIntegrationBacklogCounterCountsReadings(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	for i := range 10 {
		rs := make([]ingest.Reading, 50)
		for j := range rs {
			rs[j] = reading("count", i*50+j)
		}
		e.addBatch(0, rs...)
	}
	if n := e.backlogCounter(0); n != 500 {
		t.Fatalf("counter %d for 10 entries of 50, want 500", n)
	}
	r := e.start(Config{BatchSize: 100, BatchAge: 20 * time.Millisecond})
	e.waitRows(500, 10*time.Second)
	testenv.Eventually(t, 5*time.Second, func() bool { return e.backlogCounter(0) == 0 }, "counter %d after the drain", e.backlogCounter(0))
	r.stop()

	// Committed and not trimmed (a bridge that died between the two): the
	// next session's first trim counts them itself.
	last := ""
	for i := range 4 {
		last = e.addBatch(0, reading("count2", i*2), reading("count2", i*2+1))
	}
	if _, err := e.pg.Exec(t.Context(), "UPDATE bridge_checkpoints SET last_id = $1 WHERE stream = $2", last, e.streams.Key(0)); err != nil {
		t.Fatal(err)
	}
	e.addBatch(0, reading("count3", 1), reading("count3", 2), reading("count3", 3))
	if n := e.backlogCounter(0); n != 11 {
		t.Fatalf("counter %d, want 11", n)
	}
	e.start(Config{BatchSize: 100, BatchAge: 20 * time.Millisecond})
	e.waitRows(503, 10*time.Second)
	testenv.Eventually(t, 5*time.Second, func() bool { return e.backlogCounter(0) == 0 && e.streamLen() == 0 },
		"counter %d, %d entries after the second session", e.backlogCounter(0), e.streamLen())
	if n := e.count("SELECT count(*) FROM readings WHERE device_id = 'count2'"); n != 0 {
		t.Errorf("%d readings below the checkpoint written, want 0", n)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
