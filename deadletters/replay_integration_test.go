package deadletters

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"firehose/bridge"
	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// noResolver is a Resolver for tests without edge dead letters.
type noResolver struct{}

func (noResolver) Resolve(context.Context, ingest.DeadLetter) ([]ingest.Reading, error) {
	return nil, nil
}

// TestIntegrationListPlanSendLandOnce drives the package without the
// command: rows of readings_rejected are listed, planned (a corrupt entry
// only with its repair), sent, landed by a bridge, and sent again without
// landing twice.
func TestIntegrationListPlanSendLandOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pgURL := testenv.Postgres(t)
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 2}
	if err := streams.Check(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	pg, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()

	now := time.Now().UTC().Truncate(time.Microsecond)
	held := ingest.Reading{DeviceID: "dl-held", Time: now, ReceivedAt: now, Value: 3, Payload: []byte(`{"seq":3}`)}
	body := ingest.AppendEncode(nil, &held)
	insert := func(device, entry string, raw []byte) int64 {
		t.Helper()
		var id int64
		key := streams.Key(streams.Shard(device))
		if err := pg.QueryRow(ctx, `INSERT INTO readings_rejected (stream, entry_id, version, raw, error) VALUES ($1, $2, $3, $4, 'test') RETURNING id`,
			key, entry, ingest.CodecVersion, raw).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	corrupt := insert("dl-corrupt", "1-1", body[:len(body)-2])
	heldID := insert("dl-held", "1-2", body)

	prefixOf := StreamPrefix(streams)
	rows, err := List(ctx, pg, Filter{Prefix: prefixOf})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].ID != corrupt || rows[0].Status() != "pending" || !strings.Contains(rows[0].Preview(), "does not decode") {
		t.Fatalf("List: %+v", rows)
	}
	// The console's pages: newest first, then the rows below the last id.
	page, err := List(ctx, pg, Filter{Prefix: prefixOf, Replayed: true, Newest: true, Limit: 1})
	if err != nil || len(page) != 1 || page[0].ID != heldID {
		t.Fatalf("List newest first: %+v, %v; want row %d", page, err, heldID)
	}
	page, err = List(ctx, pg, Filter{Prefix: prefixOf, Replayed: true, Newest: true, Limit: 1, Before: heldID})
	if err != nil || len(page) != 1 || page[0].ID != corrupt {
		t.Fatalf("List's next page: %+v, %v; want row %d", page, err, corrupt)
	}
	if n, err := CountOthers(ctx, pg, prefixOf); err != nil || n != 0 {
		t.Fatalf("CountOthers = %d, %v", n, err)
	}
	if n, err := CountPending(ctx, pg, prefixOf, time.Time{}); err != nil || n != 2 {
		t.Fatalf("CountPending = %d, %v", n, err)
	}
	if _, err := PlanIDs(ctx, pg, []int64{corrupt}, prefixOf, prefix, nil, ingest.Limits{}, noResolver{}); err == nil || !strings.Contains(err.Error(), "does not decode") {
		t.Fatalf("PlanIDs of a corrupt row without its repair: %v", err)
	}
	if _, err := PlanIDs(ctx, pg, []int64{heldID, 999999}, prefixOf, prefix, nil, ingest.Limits{}, noResolver{}); err == nil || !strings.Contains(err.Error(), "nothing replayed") {
		t.Fatalf("PlanIDs with a missing row: %v", err)
	}
	fixed, err := PlanIDs(ctx, pg, []int64{corrupt}, prefixOf, prefix, []byte(`{"device_id":"dl-fixed","reading":21.5}`), ingest.Limits{}, noResolver{})
	if err != nil {
		t.Fatal(err)
	}
	page, err = PendingPage(ctx, pg, prefixOf, time.Time{}, corrupt)
	if err != nil || len(page) != 1 || page[0].ID != heldID {
		t.Fatalf("PendingPage after %d: %+v, %v", corrupt, page, err)
	}
	rs, err := Plan(ctx, &page[0], nil, ingest.Limits{}, noResolver{})
	if err != nil {
		t.Fatal(err)
	}
	jobs := append(fixed, Job{Row: heldID, Readings: rs})

	if err := CheckDeployment(ctx, pg, rdb, streams); err != nil {
		t.Fatal(err)
	}
	first := NewTally()
	if err := Send(ctx, rdb, streams, jobs, first); err != nil {
		t.Fatal(err)
	}
	if len(first.Sent) != 2 || first.Entries[heldID] == "" {
		t.Fatalf("tally %+v", first)
	}
	// Sent again before the bridge runs (a crash and a rerun): each row
	// still lands once.
	second := NewTally()
	if err := Send(ctx, rdb, streams, jobs, second); err != nil {
		t.Fatal(err)
	}

	b, err := bridge.New(bridge.Config{Postgres: pgURL, Streams: streams, BatchAge: 20 * time.Millisecond, LockRetry: 100 * time.Millisecond},
		rdb, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	bctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(bctx) }()
	defer func() { stop(); <-done }()
	testenv.Eventually(t, 20*time.Second, func() bool {
		n, err := CountReplayed(ctx, pg, first.Sent)
		return err == nil && n == 2
	}, "the bridge did not commit the replays")
	o, err := Outcomes(ctx, pg, first)
	if err != nil || o.Landed != 2 || o.Waiting != 0 || len(o.Refused) != 0 {
		t.Fatalf("Outcomes = %+v, %v", o, err)
	}
	// The second send's entries reach the bridge too: a marker behind them
	// on every shard lands after them.
	have := map[int]bool{}
	for i := 0; len(have) < streams.Len(); i++ {
		dev := "dl-marker-" + strconv.Itoa(i)
		if sh := streams.Shard(dev); !have[sh] {
			have[sh] = true
			r := ingest.Reading{DeviceID: dev, Time: now, ReceivedAt: now}
			if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: streams.Key(sh),
				Values: []any{ingest.FieldVersion, ingest.CodecVersion, ingest.FieldBody, ingest.AppendEncode(nil, &r)}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		var n int
		_ = pg.QueryRow(ctx, "SELECT count(*) FROM readings WHERE starts_with(device_id, 'dl-marker-')").Scan(&n)
		return n == streams.Len()
	}, "markers did not land")
	for dev, want := range map[string]int{"dl-fixed": 1, "dl-held": 1} {
		var n int
		if err := pg.QueryRow(ctx, "SELECT count(*) FROM readings WHERE device_id = $1", dev).Scan(&n); err != nil || n != want {
			t.Errorf("%s landed %d times (%v), want %d", dev, n, err, want)
		}
	}
	if _, err := PlanIDs(ctx, pg, []int64{heldID}, prefixOf, prefix, nil, ingest.Limits{}, noResolver{}); err == nil || !strings.Contains(err.Error(), "replayed already") {
		t.Fatalf("PlanIDs of a replayed row: %v", err)
	}
}
