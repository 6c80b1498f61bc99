package bridge

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"firehose/ingest"
	"firehose/internal/testenv"
)

// poison writes an entry of device whose body is cut short (it cannot be
// decoded) and waits until the bridge has rejected it; it returns the id of
// its readings_rejected row.
func (e *env) poison(device string) int64 {
	e.t.Helper()
	r := reading(device, 1)
	body := ingest.AppendEncode(nil, &r)
	key := e.streams.Key(e.streams.Shard(device))
	id := e.xadd(key, ingest.FieldVersion, ingest.CodecVersion, ingest.FieldBody, body[:len(body)-3])
	var row int64
	testenv.Eventually(e.t, 10*time.Second, func() bool {
		err := e.pg.QueryRow(e.t.Context(), "SELECT id FROM readings_rejected WHERE stream = $1 AND entry_id = $2", key, id).Scan(&row)
		return err == nil
	}, "poison entry %s of %s not rejected", id, key)
	return row
}

// replay writes a replay entry of row with r's reading to r's shard.
func (e *env) replay(row int64, r ingest.Reading) string {
	e.t.Helper()
	return e.xadd(e.streams.Key(e.streams.Shard(r.DeviceID)), ingest.ReplayValues(row, ingest.AppendEncode(nil, &r))...)
}

// settle writes a marker reading to every shard and waits until all landed:
// whatever was written to the streams before has been committed.
func (e *env) settle() {
	e.t.Helper()
	marker := "marker-" + testenv.ID()
	want := map[int]bool{}
	for i := 0; len(want) < e.streams.Len(); i++ {
		dev := fmt.Sprintf("%s-%d", marker, i)
		if sh := e.streams.Shard(dev); !want[sh] {
			want[sh] = true
			e.add(reading(dev, 0))
		}
	}
	testenv.Eventually(e.t, 10*time.Second, func() bool {
		return e.count("SELECT count(*) FROM readings WHERE starts_with(device_id, $1)", marker) == e.streams.Len()
	}, "markers did not land")
}

func (e *env) rowsOf(device string) int {
	e.t.Helper()
	return e.count("SELECT count(*) FROM readings WHERE device_id = $1", device)
}

// replayState is what readings_rejected says of a row's replay.
type replayState struct {
	at            *time.Time
	stream, entry *string
	of            *int64
}

func (e *env) replayState(row int64) replayState {
	e.t.Helper()
	var s replayState
	err := e.pg.QueryRow(e.t.Context(), "SELECT replayed_at, replayed_stream, replayed_entry, replay_of FROM readings_rejected WHERE id = $1", row).
		Scan(&s.at, &s.stream, &s.entry, &s.of)
	if err != nil {
		e.t.Fatalf("row %d: %v", row, err)
	}
	return s
}

// devicesOnShards returns two device ids of prefix on different shards.
func (e *env) devicesOnShards(prefix string) (string, string) {
	a := prefix + "-a"
	for i := 0; ; i++ {
		b := fmt.Sprintf("%s-b%d", prefix, i)
		if e.streams.Shard(a) != e.streams.Shard(b) {
			return a, b
		}
	}
}

func TestIntegrationReplayLandsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	r := e.start(Config{BatchSize: 100, BatchAge: 20 * time.Millisecond})

	row := e.poison("dev-replay")
	fixed := reading("dev-replay", 7)
	entry := e.replay(row, fixed)
	testenv.Eventually(t, 10*time.Second, func() bool { return e.rowsOf("dev-replay") == 1 }, "replay did not land")
	st := e.replayState(row)
	key := e.streams.Key(e.streams.Shard("dev-replay"))
	if st.at == nil || st.entry == nil || *st.entry != entry || st.stream == nil || *st.stream != key {
		t.Fatalf("row %d after its replay: replayed_at %v stream %v entry %v, want %s %s", row, st.at, st.stream, st.entry, key, entry)
	}
	var got ingest.Reading
	if err := e.pg.QueryRow(t.Context(), "SELECT ts, received_at, reading, payload FROM readings WHERE device_id = $1", "dev-replay").
		Scan(&got.Time, &got.ReceivedAt, &got.Value, &got.Payload); err != nil {
		t.Fatal(err)
	}
	if !got.Time.Equal(fixed.Time) || !got.ReceivedAt.Equal(fixed.ReceivedAt) || got.Value != fixed.Value || string(got.Payload) != `{"seq": 7}` {
		t.Fatalf("replayed reading landed as %+v, want %+v", got, fixed)
	}

	// The same entry again, later and twice in one batch: left out.
	e.replay(row, fixed)
	e.replay(row, fixed)
	e.settle()
	if n := e.rowsOf("dev-replay"); n != 1 {
		t.Fatalf("dev-replay landed %d times after duplicate replays, want once", n)
	}
	if n := e.count("SELECT count(*) FROM readings_rejected"); n != 1 {
		t.Fatalf("readings_rejected has %d rows, want only the poison entry's", n)
	}
	// Counted once, as the poison entry it was: replays are not rejections.
	if n := testutil.ToFloat64(r.b.m.rejected.WithLabelValues("decode")); n != 1 {
		t.Fatalf("rejected{decode} = %v, want 1", n)
	}
	if st2 := e.replayState(row); *st2.entry != entry {
		t.Fatalf("a duplicate replay re-marked row %d: entry %s, want %s", row, *st2.entry, entry)
	}
	// A replay that landed is a committed row like any other (the others
	// are settle's markers).
	rows := e.count("SELECT count(*) FROM readings")
	if n := testutil.ToFloat64(r.b.m.committed); int(n) != rows {
		t.Fatalf("rows committed = %v, want the %d in readings, the replayed one among them", n, rows)
	}
	if n := e.count("SELECT coalesce(sum(rows), 0) FROM bridge_checkpoints WHERE stream LIKE $1", e.streams.Prefix+"%"); n != rows {
		t.Fatalf("bridge_checkpoints.rows sum to %d, want the %d in readings", n, rows)
	}
}

func TestIntegrationReplayDuplicatesInOneBatchLandOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	r := e.start(Config{BatchSize: 1000, BatchAge: 20 * time.Millisecond})
	row := e.poison("dev-batch")
	r.stop()

	// With the bridge stopped, every entry lands in one batch.
	fixed := reading("dev-batch", 3)
	first := e.replay(row, fixed)
	for range 3 {
		e.replay(row, fixed)
	}
	e.add(reading("dev-batch-neighbour", 1))
	e.start(Config{BatchSize: 1000, BatchAge: 20 * time.Millisecond})
	e.settle()
	if n := e.rowsOf("dev-batch"); n != 1 {
		t.Fatalf("four replays of one row in one batch landed %d times, want once", n)
	}
	if n := e.rowsOf("dev-batch-neighbour"); n != 1 {
		t.Fatalf("the replays' neighbour landed %d times, want once", n)
	}
	if st := e.replayState(row); st.entry == nil || *st.entry != first {
		t.Fatalf("row %d claimed by %v, want the first replay entry %s", row, st.entry, first)
	}
}

// Two repairs of one row on different shards (two operators at once, each
// with another device id) are committed by two sessions at the same time:
// one lands.
func TestIntegrationReplayRaceAcrossShardsLandsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	for round := range 5 {
		r := e.start(Config{BatchSize: 1000, BatchAge: 20 * time.Millisecond})
		row := e.poison(fmt.Sprintf("dev-race-%d", round))
		r.stop()
		a, b := e.devicesOnShards(fmt.Sprintf("dev-race-%d", round))
		e.replay(row, reading(a, 1))
		e.replay(row, reading(b, 1))
		e.start(Config{BatchSize: 1000, BatchAge: 20 * time.Millisecond})
		e.settle()
		if n := e.rowsOf(a) + e.rowsOf(b); n != 1 {
			t.Fatalf("round %d: two replays of row %d on two shards landed %d times, want once", round, row, n)
		}
	}
}

func TestIntegrationReplayRefusedAgainIsANewRow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	r := e.start(Config{BatchSize: 100, BatchAge: 20 * time.Millisecond})
	row := e.poison("dev-again")

	// A repair PostgreSQL still refuses (the bridge does not validate).
	bad := reading("dev-again", 2)
	bad.Payload = []byte(`{"note":`)
	entry := e.replay(row, bad)
	// A replay of a row that does not exist, and malformed replay entries.
	e.replay(row+1000, reading("dev-orphan", 1))
	key := e.streams.Key(0)
	e.xadd(key, ingest.FieldVersion, ingest.CodecVersion, ingest.FieldReplayOf, "abc", ingest.FieldReplayBody, "x")
	e.xadd(key, ingest.FieldVersion, ingest.CodecVersion, ingest.FieldReplayOf, fmt.Sprint(row))
	e.settle()

	if n := e.rowsOf("dev-again") + e.rowsOf("dev-orphan"); n != 0 {
		t.Fatalf("refused replays landed %d rows", n)
	}
	st := e.replayState(row)
	if st.at == nil || *st.entry != entry {
		t.Fatalf("row %d: a replay refused again must still claim it (the new row is the live one): %+v", row, st)
	}
	var newRow int64
	var raw []byte
	var msg string
	err := e.pg.QueryRow(t.Context(), "SELECT id, raw, error FROM readings_rejected WHERE replay_of = $1", row).Scan(&newRow, &raw, &msg)
	if err != nil {
		t.Fatalf("the refused replay of row %d is not a new row: %v", row, err)
	}
	if string(raw) != string(ingest.AppendEncode(nil, &bad)) || !strings.Contains(msg, fmt.Sprintf("replay of rejected row %d", row)) ||
		!strings.Contains(msg, "invalid input syntax for type json") {
		t.Fatalf("new row %d: raw %q error %q, want the replayed body and the refusal", newRow, raw, msg)
	}
	if err := e.pg.QueryRow(t.Context(), "SELECT error FROM readings_rejected WHERE replay_of = $1", row+1000).Scan(&msg); err != nil ||
		!strings.Contains(msg, "no row") {
		t.Fatalf("replay of a missing row: %q, %v; want a new row saying the row does not exist", msg, err)
	}
	var malformed int
	rows, err := e.pg.Query(t.Context(), "SELECT error FROM readings_rejected WHERE replay_of IS NULL AND id <> $1", row)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if strings.Contains(m, ingest.ErrMalformedReplay.Error()) {
			malformed++
		}
	}
	if malformed != 2 {
		t.Fatalf("malformed replay entries recorded: %q, want 2 naming %q", msgs, ingest.ErrMalformedReplay)
	}
	// The poison, two refused replays, two malformed entries.
	if n := testutil.ToFloat64(r.b.m.rejected.WithLabelValues("decode")); n != 5 {
		t.Fatalf("rejected{decode} = %v, want 5", n)
	}

	// The new row is the one to replay: its repair lands, once.
	fixed := reading("dev-again", 3)
	e.replay(newRow, fixed)
	e.replay(row, fixed) // the old row is claimed: left out
	e.settle()
	if n := e.rowsOf("dev-again"); n != 1 {
		t.Fatalf("dev-again landed %d times, want once", n)
	}
}
