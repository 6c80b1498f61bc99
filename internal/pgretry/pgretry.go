package pgretry

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Transient reports whether err may go away by itself: the server starting
// up or shutting down (SQLSTATE 57P01-57P03), a connection exception (class
// 08), insufficient resources (class 53), a serialization failure or
// deadlock (40001, 40P01), or the connection failing below SQL (refused,
// reset, closed, timed out). The caller's own context ending is not: retrying
// cannot help then.
func Transient(err error) bool {
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
		return false
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		pgconn.SafeToRetry(err) || pgconn.Timeout(err)
}
