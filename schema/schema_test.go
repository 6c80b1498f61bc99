package schema_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"firehose/internal/testenv"
	"firehose/schema"
)

func TestMigrationsAreNumberedInOrder(t *testing.T) {
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Version != 1 {
		t.Fatalf("migrations %v: want the first to be version 1", ms)
	}
	for i := 1; i < len(ms); i++ {
		if ms[i].Version <= ms[i-1].Version {
			t.Errorf("%s after %s", ms[i].Name, ms[i-1].Name)
		}
	}
}

// Concurrent starts of firehose all apply the schema at once: exactly one
// applies each migration and none fails.
func TestIntegrationConcurrentApply(t *testing.T) {
	dbURL := testenv.PostgresEmpty(t)
	var wg sync.WaitGroup
	applied := make([][]string, 6)
	errs := make([]error, 6)
	for i := range applied {
		wg.Go(func() {
			conn, err := pgx.Connect(t.Context(), dbURL)
			if err != nil {
				errs[i] = err
				return
			}
			defer conn.Close(context.Background())
			applied[i], errs[i] = schema.Apply(t.Context(), conn)
		})
	}
	wg.Wait()
	total := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
		total += len(applied[i])
	}
	ms, _ := schema.Migrations()
	if total != len(ms) {
		t.Errorf("migrations applied %d times in all, want %d (once each)", total, len(ms))
	}
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM readings").Scan(&n); err != nil {
		t.Fatalf("readings table missing after apply: %v", err)
	}
}
