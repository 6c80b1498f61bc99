package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// lease is a session's hold on its shard: a PostgreSQL connection of its own
// holding the shard's advisory lock. Only the holder writes the shard's rows,
// on this connection, so a session that lost it cannot write; closing the
// connection releases the lock.
type lease struct {
	conn   *pgx.Conn
	usedPG time.Time // last PostgreSQL call that succeeded: pinged when idle
}

// connect opens the session's connection (without the lock yet; see lock).
func (s *session) connect(ctx context.Context) error {
	cctx, cancel := s.pgCtx(ctx)
	conn, err := pgx.ConnectConfig(cctx, s.b.pg)
	cancel()
	if err != nil {
		err = opErr("connect", fmt.Errorf("connect to postgres: %w", err))
		s.b.m.countError(err)
		return err
	}
	s.conn = conn
	s.usedPG = time.Now()
	return nil
}

// release closes the connection, which releases the lock, on purpose: the
// next session takes it again and starts from the checkpoint. It runs even
// after ctx ended, bounded to 2 seconds.
func (s *session) release(ctx context.Context) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	s.conn.Close(cctx)
}

// pgCtx bounds one PostgreSQL call (a statement, a ping, a connect) to half
// the session timeout, so a bridge whose path to PostgreSQL froze notices
// (see sessionSettings).
func (s *session) pgCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.b.cfg.SessionTimeout/2)
}

// errLockTaken: another session holds the shard's lock (and is not
// silent): the coordinator decides what next.
var errLockTaken = errors.New("the shard's lock is held by another bridge")

// lock takes the shard's advisory lock, or returns errLockTaken. If another
// session holds the lock, it also ends that session when it has been silent
// for the session timeout (evictStale), so a frozen owner gives the shard up.
func (s *session) lock(ctx context.Context) error {
	key := LockKey(s.key)
	var ok bool
	qctx, cancel := s.pgCtx(ctx)
	defer cancel()
	err := s.conn.QueryRow(qctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok)
	if err == nil && !ok {
		var evicted bool
		if evicted, err = s.evictStale(qctx, key); err == nil && evicted {
			err = s.conn.QueryRow(qctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok)
		}
	}
	switch {
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		err = opErr("lock", fmt.Errorf("take lock of %s: %w", s.key, err))
		s.b.m.countError(err)
		return err
	case !ok:
		return errLockTaken
	}
	s.usedPG = time.Now()
	return nil
}

// evictStaleQuery ends the session holding advisory lock ($1, $2) if it has
// shown no activity (pg_stat_activity.state_change) for $3 ms, and waits up
// to a second for it to go. A healthy holder changes state at least every
// third of the session timeout (pings) and never runs a statement or waits in
// a transaction for half of it (statement_timeout, idle_in_transaction_
// session_timeout); a silent one may be stuck reading a COPY's rows from a
// frozen path, where no server timeout reaches it.
const evictStaleQuery = `SELECT a.pid, extract(epoch FROM clock_timestamp() - a.state_change)::float8,
	pg_terminate_backend(a.pid, 1000)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = $1 AND l.objid::bigint = $2
  AND a.pid <> pg_backend_pid()
  AND a.state_change < clock_timestamp() - $3 * interval '1 millisecond'`

// evictStale ends the lock's holder if it has been silent for the session
// timeout; true when it did.
func (s *session) evictStale(ctx context.Context, key int64) (bool, error) {
	u := uint64(key)
	var (
		pid    int32
		silent float64
		ended  bool
	)
	err := s.conn.QueryRow(ctx, evictStaleQuery, int64(u>>32), int64(uint32(u)), s.b.cfg.SessionTimeout.Milliseconds()).Scan(&pid, &silent, &ended)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil
	case err != nil:
		// Not allowed to end it (another role), or the query failed: the
		// server's own timeouts still end a silent holder's idle session.
		s.log.Warn("could not end a silent lock holder's session", "err", err)
		return false, nil
	}
	s.b.m.evicted.Inc()
	s.log.Warn("ended the session of a silent bridge holding the shard", "pid", pid, "silent_s", silent, "ended", ended)
	return true, nil
}

// ping keeps an idle lock session alive: PostgreSQL ends a session idle for
// the session timeout (sessionSettings), so one unused for a third of it is
// pinged.
func (s *session) ping(ctx context.Context) error {
	if time.Since(s.usedPG) < s.b.cfg.SessionTimeout/3 {
		return nil
	}
	pctx, cancel := s.pgCtx(ctx)
	defer cancel()
	if err := s.conn.Ping(pctx); err != nil {
		return opErr("ping", fmt.Errorf("ping the session of %s: %w", s.key, err))
	}
	s.usedPG = time.Now()
	return nil
}
