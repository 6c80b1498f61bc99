package registry

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"firehose/broker"
	"firehose/ingest"
)

// Defaults of Source's timings.
const (
	// DefaultSeenInterval is how often the devices that connected are
	// written to last_seen, in one UPDATE.
	DefaultSeenInterval = 10 * time.Second
	// DefaultPing is how long the watch waits for a notification before it
	// checks that its connection is alive (a path that stalls without
	// closing is noticed within this plus the query timeout).
	DefaultPing = 30 * time.Second
	// DefaultMaxBackoff caps the wait between attempts to reach PostgreSQL
	// again (from 100 ms, doubling).
	DefaultMaxBackoff = 5 * time.Second
	// coalesce bounds how long a burst of notifications (a provisioning
	// script) is gathered into one reload: a change still reaches the
	// brokers well within a second.
	coalesce = 200 * time.Millisecond
	// queryTimeout bounds one reload, ping or last_seen write.
	queryTimeout = 30 * time.Second
)

// Source is the registry as the broker's broker.CredentialSource: the
// enabled devices of firehose_devices, loaded whole and kept current by
// Watch. It never makes the broker wait for PostgreSQL: Credentials is an
// atomic load of the last version read.
type Source struct {
	conn *pgx.ConnConfig
	log  *slog.Logger

	// SeenInterval, Ping and MaxBackoff are DefaultSeenInterval, DefaultPing
	// and DefaultMaxBackoff unless set before Watch (tests shorten them).
	SeenInterval, Ping, MaxBackoff time.Duration

	cur atomic.Pointer[broker.Credentials] // nil until the first load

	mu   sync.Mutex
	seen map[string]struct{} // connected since the last write of last_seen
}

// Open returns the registry of the database at url (a PostgreSQL URL, as
// --postgres); it does not connect yet.
func Open(url string, log *slog.Logger) (*Source, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("device registry: %w", err)
	}
	return &Source{conn: cfg, log: log.With("component", "registry"), seen: map[string]struct{}{},
		SeenInterval: DefaultSeenInterval, Ping: DefaultPing, MaxBackoff: DefaultMaxBackoff}, nil
}

// Credentials returns the enabled devices of the last load; nil before the
// first one succeeded.
func (s *Source) Credentials() broker.Credentials {
	if c := s.cur.Load(); c != nil {
		return *c
	}
	return nil
}

// Connected notes that device connected, for the next write of last_seen.
func (s *Source) Connected(device string) {
	s.mu.Lock()
	s.seen[device] = struct{}{}
	s.mu.Unlock()
}

// Load reads the whole registry once, on a connection of its own. serve
// calls it before the broker listens, so that a broker whose PostgreSQL
// answers starts with its devices; if it fails, Watch keeps trying.
func (s *Source) Load(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, s.conn.Copy())
	if err != nil {
		return fmt.Errorf("device registry: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = s.reload(ctx, conn)
	return err
}

// reload reads the enabled devices and puts them in use; it returns the
// version before. A row the broker could not use (a hash or grant written
// by hand that does not check) is left out, and logged.
func (s *Source) reload(ctx context.Context, conn *pgx.Conn) (broker.Credentials, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, err := conn.Query(ctx, `SELECT id, secret_hash, read, write, sparkplug FROM firehose_devices WHERE enabled`)
	if err != nil {
		return nil, fmt.Errorf("device registry: read: %w", err)
	}
	creds := broker.Credentials{}
	var id, hash string
	var g Grants
	bad := 0
	_, err = pgx.ForEachRow(rows, []any{&id, &hash, &g.Read, &g.Write, &g.Sparkplug}, func() error {
		c, err := broker.NewCredential(hash, g.Read, g.Write, g.Sparkplug)
		if err == nil {
			err = ingest.ValidateDeviceID(id, 0)
		}
		if err != nil {
			bad++
			s.log.Warn("device registry: a device left out", "device_id", id, "err", err)
			return nil
		}
		creds[id] = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("device registry: read: %w", err)
	}
	old := s.Credentials()
	s.cur.Store(&creds)
	if old == nil {
		s.log.Info("device registry loaded", "devices", len(creds), "left_out", bad)
	}
	return old, nil
}

// Watch keeps the credentials current until ctx ends (see
// broker.CredentialSource): it LISTENs on Channel on a connection of its
// own, reads the whole registry again after each burst of notifications
// (gathered for up to 200 ms), and after each new LISTEN, so nothing that
// changed while it was away is missed. On losing PostgreSQL it keeps the
// last version, and tries again from 100 ms, doubling up to MaxBackoff.
// Beside it, the devices that connected are written to last_seen every
// SeenInterval.
func (s *Source) Watch(ctx context.Context, changed func(old, cur broker.Credentials)) {
	var wg sync.WaitGroup
	wg.Go(func() { s.writeSeen(ctx) })
	defer wg.Wait()
	backoff, quiet := 100*time.Millisecond, false
	for {
		up := false
		err := s.listen(ctx, changed, &up)
		if ctx.Err() != nil {
			return
		}
		switch {
		case up:
			s.log.Warn("device registry: lost PostgreSQL; admitting from the devices last loaded, reconnecting", "err", err)
			backoff, quiet = 100*time.Millisecond, true
		case !quiet:
			s.log.Warn("device registry: PostgreSQL unreachable; retrying", "err", err, "loaded", s.Credentials() != nil)
			quiet = true
		default:
			s.log.Debug("device registry: PostgreSQL still unreachable", "err", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, s.MaxBackoff)
	}
}

// listen connects, LISTENs, reloads (then sets *up), then reloads after
// each burst of notifications until the connection fails (returned) or ctx
// ends (nil).
func (s *Source) listen(ctx context.Context, changed func(old, cur broker.Credentials), up *bool) error {
	conn, err := pgx.ConnectConfig(ctx, s.conn.Copy())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// LISTEN is in place: a change from now on is notified, so a full read
	// now misses nothing.
	apply := func() error {
		old, err := s.reload(ctx, conn)
		if err != nil {
			return err
		}
		changed(old, s.Credentials())
		return nil
	}
	if err := apply(); err != nil {
		return err
	}
	*up = true
	s.log.Debug("device registry: listening for changes")
	for {
		notified, err := wait(ctx, conn, s.Ping)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return err
		case notified:
			// Gather the burst, then read once.
			for deadline := time.Now().Add(coalesce); time.Now().Before(deadline); {
				more, err := wait(ctx, conn, 20*time.Millisecond)
				if err != nil {
					return err
				}
				if !more {
					break
				}
			}
			if err := apply(); err != nil {
				return err
			}
		default:
			// Quiet for a while: is the connection still there?
			pctx, cancel := context.WithTimeout(ctx, queryTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("ping: %w", err)
			}
		}
	}
}

// wait waits up to d for a notification: notified false when d passed (the
// connection stays usable), an error when the connection failed.
func wait(ctx context.Context, conn *pgx.Conn, d time.Duration) (notified bool, err error) {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_, err = conn.WaitForNotification(wctx)
	switch {
	case err == nil:
		return true, nil
	case ctx.Err() == nil && pgconn.Timeout(err):
		return false, nil
	}
	return false, fmt.Errorf("wait for notifications: %w", err)
}

// writeSeen writes last_seen every SeenInterval, and once more when ctx
// ends, for the devices that connected since the last write, on a
// connection of its own (opened again after a failure); a write that fails
// keeps them for the next.
func (s *Source) writeSeen(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	flush := func(ctx context.Context) error {
		ids := s.takeSeen()
		if len(ids) == 0 {
			return nil
		}
		ctx, cancel := context.WithTimeout(ctx, queryTimeout)
		defer cancel()
		err := func() (err error) {
			if conn == nil {
				if conn, err = pgx.ConnectConfig(ctx, s.conn.Copy()); err != nil {
					return err
				}
			}
			_, err = conn.Exec(ctx, `UPDATE firehose_devices d SET last_seen = now() FROM unnest($1::text[]) AS s(id) WHERE d.id = s.id`, ids)
			return err
		}()
		if err != nil {
			if conn != nil {
				conn.Close(context.WithoutCancel(ctx))
				conn = nil
			}
			s.putBackSeen(ids)
			return fmt.Errorf("write last_seen of %d devices: %w", len(ids), err)
		}
		return nil
	}
	t := time.NewTicker(s.SeenInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if err := flush(fctx); err != nil {
				s.log.Debug("device registry: last_seen not written at shutdown", "err", err)
			}
			return
		case <-t.C:
			if err := flush(ctx); err != nil && ctx.Err() == nil {
				s.log.Debug("device registry: last_seen not written; retrying", "err", err)
			}
		}
	}
}

// takeSeen returns the devices noted since the last call.
func (s *Source) takeSeen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.seen))
	for id := range s.seen {
		ids = append(ids, id)
	}
	clear(s.seen)
	return ids
}

// putBackSeen notes ids again after a failed write.
func (s *Source) putBackSeen(ids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		s.seen[id] = struct{}{}
	}
}

var _ broker.CredentialSource = (*Source)(nil)
