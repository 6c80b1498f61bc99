package demo

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"firehose/internal/testenv"
)

func TestIntegrationWaitLanded(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	const insert = `INSERT INTO readings (device_id, ts, received_at, reading, payload) VALUES ($1, now(), now(), 1, $2)`
	for _, r := range []struct{ device, payload string }{
		{"demo-run1-fast-0", `{"id": 1}`},
		{"demo-run1-fast-0", `{"id": 1}`}, // a duplicate
		{"demo-run1-3", `{"seq": 2}`},
		{"demo-run1-3", `{"seq": 3}`},
		{"demo-run2-3", `{"seq": 4}`}, // another run's
	} {
		if _, err := pool.Exec(ctx, insert, r.device, r.payload); err != nil {
			t.Fatal(err)
		}
	}
	rows, distinct, err := WaitLanded(ctx, pool, "run1", 3, time.Second)
	if err != nil || rows != 4 || distinct != 3 {
		t.Errorf("WaitLanded = %d rows, %d distinct, %v; want 4, 3, nil", rows, distinct, err)
	}
	start := time.Now()
	rows, distinct, err = WaitLanded(ctx, pool, "run1", 5, 300*time.Millisecond)
	if err != nil || rows != 4 || distinct != 3 {
		t.Errorf("WaitLanded past its timeout = %d rows, %d distinct, %v; want 4, 3, nil", rows, distinct, err)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("WaitLanded gave up after %s; want at least its timeout", waited)
	}
}
