package console

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestPartitionsPage(t *testing.T) {
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	next := day.Add(24 * time.Hour)
	srv := newPagesServer(t, Config{Partitions: func(context.Context) (*Partitions, error) {
		return &Partitions{Retention: 30 * 24 * time.Hour, Maintained: true,
			NextDrop: &Drop{Table: "readings", Partition: "readings_p20261201", At: day.Add(31 * 24 * time.Hour)},
			Tables: []PartitionedTable{
				{Name: "readings", Partitions: []Partition{
					{Name: "readings_p20261201", From: &day, To: &next, Rows: 1200, Bytes: 3 << 20},
					{Name: "readings_default", Rows: -1, Bytes: 8192}}},
				{Name: "press_telemetry"},
			}}, nil
	}})
	if code, body := get(t, srv.URL+"/console/partitions"); code != http.StatusUnauthorized || strings.Contains(body, "readings_p20261201") {
		t.Errorf("without the token: %d, want 401 and no partition", code)
	}
	code, body := get(t, srv.URL+"/console/partitions", "Authorization", "Bearer s3cret")
	if code != http.StatusOK {
		t.Fatalf("answered %d, want 200", code)
	}
	for _, want := range []string{
		`<dd id="retention">30d: partitions whose whole range is older are dropped</dd>`,
		`<dd id="next-drop"><code>readings_p20261201</code> of readings, from 2027-01-01 00:00Z</dd>`,
		`<tr data-partition="readings_p20261201"><td>readings_p20261201</td><td>2026-12-01 00:00Z</td><td>2026-12-02 00:00Z</td><td>1200</td><td>3.0 MB</td></tr>`,
		`<tr data-partition="readings_default"><td>readings_default</td><td>DEFAULT</td><td>DEFAULT</td><td>–</td><td>8 kB</td></tr>`,
		`<table class="partitions" data-table="press_telemetry">`, "not partitioned, or the table does not exist yet",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q:\n%s", want, body)
		}
	}
}

func TestPartitionsPageWithoutRetentionOrPostgres(t *testing.T) {
	srv := newPagesServer(t, Config{Partitions: func(context.Context) (*Partitions, error) { return &Partitions{}, nil }})
	_, body := get(t, srv.URL+"/console/partitions", "Authorization", "Bearer s3cret")
	if !strings.Contains(body, `<dd id="retention">none: everything is kept</dd>`) || !strings.Contains(body, `<dd id="next-drop">–</dd>`) {
		t.Errorf("no retention:\n%s", body)
	}
	srv = newPagesServer(t, Config{Partitions: func(context.Context) (*Partitions, error) { return nil, errors.New("connection refused") }})
	if _, body := get(t, srv.URL+"/console/partitions", "Authorization", "Bearer s3cret"); !strings.Contains(body, `<p id="error" class="box bad">connection refused</p>`) || strings.Contains(body, "everything is kept") {
		t.Errorf("PostgreSQL down:\n%s", body)
	}
	srv = newPagesServer(t, Config{})
	if _, body := get(t, srv.URL+"/console/partitions", "Authorization", "Bearer s3cret"); !strings.Contains(body, "does not use PostgreSQL") {
		t.Errorf("no PostgreSQL here:\n%s", body)
	}
}
