package partition_test

import (
	"testing"
	"time"

	"firehose/partition"
)

// List shows readings' partitions by range with their estimated rows and
// size, the default partition last, and nothing for a table that does not
// exist.
func TestIntegrationListShowsPartitions(t *testing.T) {
	pool := open(t)
	if err := newMaintainer(pool, partition.Config{Interval: 24 * time.Hour}).Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	today := partition.Floor(now, 24*time.Hour)
	for range 10 {
		insert(t, pool, "pump-7", now)
	}
	if _, err := pool.Exec(t.Context(), "ANALYZE readings"); err != nil {
		t.Fatal(err)
	}
	ps, err := partition.List(t.Context(), pool, partition.Parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) < 5 {
		t.Fatalf("%d partitions, want today's, 3 ahead and the default: %+v", len(ps), ps)
	}
	last := ps[len(ps)-1]
	if last.Name != partition.Default || last.From != nil || last.To != nil {
		t.Errorf("the last partition is %+v, want the default one, unbounded", last)
	}
	var found bool
	for i, p := range ps[:len(ps)-1] {
		if i > 0 && ps[i-1].To != nil && p.From != nil && p.From.Before(*ps[i-1].To) {
			t.Errorf("partitions not in order of range: %s after %s", p.Name, ps[i-1].Name)
		}
		if p.Name == partition.Name(today) {
			found = true
			if !p.From.Equal(today) || !p.To.Equal(today.Add(24*time.Hour)) || p.Rows != 10 || p.Bytes <= 0 {
				t.Errorf("today's partition: %+v, want [%s, +1d), 10 rows, a size", p, today)
			}
		}
	}
	if !found {
		t.Errorf("no partition %s in %+v", partition.Name(today), ps)
	}
	if ps, err := partition.List(t.Context(), pool, "no_such_table"); err != nil || len(ps) != 0 {
		t.Errorf("a table that does not exist: %v, %v; want none", ps, err)
	}
	if at := partition.DropAt(today, 48*time.Hour); !at.Equal(today.Add(48 * time.Hour)) {
		t.Errorf("DropAt: %s", at)
	}
	if at := partition.DropAt(today, 0); !at.IsZero() {
		t.Errorf("DropAt without retention: %s, want never", at)
	}
}
