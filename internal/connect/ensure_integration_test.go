package connect

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"firehose/internal/syncbuf"
	"firehose/internal/testenv"
	"firehose/typed"
)

// TestIntegrationEnsureTablesWaitsForPostgres: the bridge's start brings
// the typed tables up to date through a PostgreSQL that is not answering
// yet (here: nothing listens at its address), waiting instead of failing,
// and does so once PostgreSQL answers. The campaign found a bridge that
// exited when PostgreSQL stopped at that moment.
func TestIntegrationEnsureTablesWaitsForPostgres(t *testing.T) {
	dbURL := testenv.Postgres(t)
	addr := testenv.FreeAddr(t)
	pc, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	pgAddr := net.JoinHostPort(pc.ConnConfig.Host, strconv.Itoa(int(pc.ConnConfig.Port)))
	host, port, _ := net.SplitHostPort(addr)
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	pc.ConnConfig.Host, pc.ConnConfig.Port = host, uint16(p)
	pool, err := pgxpool.NewWithConfig(t.Context(), pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	table := typed.Table{Name: "waited_for", Rule: "w", TimeColumn: "time",
		Columns: []typed.Column{{Name: "time", Type: typed.Timestamptz}, {Name: "v", Type: typed.Real}}}
	done := make(chan error, 1)
	go func() {
		_, err := EnsureTablesWaiting(t.Context(), pool, []typed.Table{table}, log)
		done <- err
	}()
	testenv.Await(t, func() bool { return strings.Contains(logs.String(), "tries again") }, "a retry while PostgreSQL does not answer")

	// PostgreSQL answers at the address from now on: a proxy to it.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", pgAddr)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c) }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	if err := <-done; err != nil {
		t.Fatalf("EnsureTablesWaiting: %v", err)
	}
	if n := testenv.QueryInt(t, dbURL, `SELECT count(*) FROM pg_class WHERE relname = 'waited_for'`); n != 1 {
		t.Errorf("table waited_for: %d, want created", n)
	}
}
