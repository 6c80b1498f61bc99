package simulator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// transientPG reports whether a PostgreSQL error of the verification may go
// away by itself: the server starting up or shutting down (SQLSTATE
// 57P01-57P03, e.g. "the database system is starting up" right after the
// target's database restarted), a connection exception (class 08),
// insufficient resources (class 53), a serialization failure or deadlock
// (40001, 40P01), or the connection failing below SQL (refused, reset,
// timed out). Any other error is the verification's answer.
func transientPG(err error) bool {
	if err == nil {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03",
			pe.Code == "40001", pe.Code == "40P01",
			strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "53"):
			return true
		}
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false // the caller's time is up: retrying cannot help
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		pgconn.SafeToRetry(err) || pgconn.Timeout(err)
}

// retryPG runs f until it returns nil or an error that is not transient
// (transientPG), backing off from 100 ms doubling to 2 s; ctx bounds the
// whole. Each retry is logged once at Info (what failed, when the next
// attempt is), so a verification waiting for its database says so.
func retryPG(ctx context.Context, log *slog.Logger, what string, f func() error) error {
	wait := 100 * time.Millisecond
	for {
		err := f()
		if err == nil || !transientPG(err) {
			return err
		}
		log.Info("verification: PostgreSQL failed transiently; retrying", "what", what, "err", err, "retry_in", wait)
		if !sleep(ctx, wait) {
			return fmt.Errorf("%s: %w (still failing when the verification's time ran out)", what, err)
		}
		wait = min(2*wait, 2*time.Second)
	}
}
