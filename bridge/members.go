package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"firehose/internal/backoff"
)

// The bridges of a deployment share its shards through PostgreSQL: each is a
// row in bridge_members (schema 006) while it lives, and every LockRetry its
// coordinator heartbeats that row, deletes the rows of dead members, reads
// the live ones and the shards' locks, and decides (plan) which shards its
// workers take and which they hand over. Nothing of it lives in a bridge's
// memory alone: a bridge that restarts, or another one, reads the same rows.
// The shard's advisory lock stays the fence: the coordinator may be briefly
// wrong about who should own what, never about who writes.
//
// Bounds, with L = LockRetry and T = SessionTimeout:
//   - a bridge joins: the others see it within L and hand over what is
//     above their share once the batch in hand is committed (a blocked read
//     returns within a second, then one commit); it takes them on its next
//     tick: about 2L + 1s + a commit;
//   - a bridge's process dies (its connections close): its member lock and
//     shard locks go at once; the survivors take its shards on their next
//     tick, within L (2L when two reached for one shard);
//   - a bridge goes silent (host down, network frozen): PostgreSQL ends its
//     sessions, or its heartbeat is T old, within T; the survivors take its
//     shards within T + 2L (ending a session stuck in a COPY, see
//     evictStale).

// memberLockKey is the advisory lock a member's session holds while it lives.
func memberLockKey(prefix, id string) int64 {
	h := fnv.New64a()
	h.Write([]byte("firehose bridge member "))
	h.Write([]byte(prefix))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return int64(h.Sum64())
}

// lockHeldSQL is true when the advisory lock (bigint key) in column key is
// held in this database: a bigint key shows in pg_locks as classid (high 32
// bits) and objid (low 32 bits), objsubid 1.
const lockHeldSQL = `l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
	AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND l.classid::bigint = (%[1]s >> 32) & 4294967295 AND l.objid::bigint = %[1]s & 4294967295`

const (
	joinQuery = `INSERT INTO bridge_members (id, prefix, host, pid, lock_key, shards_owned)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO UPDATE SET seen_at = now(), shards_owned = EXCLUDED.shards_owned`

	leaveQuery = `DELETE FROM bridge_members WHERE id = $1`
)

// expireQuery deletes the rows of members that are dead: their lock is not
// held (the session ended with the process, or PostgreSQL ended it), or
// their heartbeat is $3 ms old.
var expireQuery = `DELETE FROM bridge_members m WHERE m.prefix = $1 AND m.id <> $2
  AND (m.seen_at < now() - $3 * interval '1 millisecond'
       OR NOT EXISTS (SELECT 1 FROM pg_locks l WHERE ` + fmt.Sprintf(lockHeldSQL, "m.lock_key") + `))`

const membersQuery = `SELECT id, shards_owned FROM bridge_members WHERE prefix = $1 ORDER BY started_at, id`

// locksQuery shows each shard's lock ($1, in shard order): held, and held by
// a session silent for $2 ms.
var locksQuery = `SELECT l.pid IS NOT NULL,
	coalesce(a.state_change < clock_timestamp() - $2 * interval '1 millisecond', false)
FROM unnest($1::bigint[]) WITH ORDINALITY AS k(key, ord)
LEFT JOIN pg_locks l ON ` + fmt.Sprintf(lockHeldSQL, "k.key") + `
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
ORDER BY k.ord`

// coordinate keeps this bridge a member of the deployment and balances its
// shards until ctx ends; losing the membership session, it joins again with
// backoff. While it is not a member, the bridge keeps the shards it holds and
// takes none.
func (b *Bridge) coordinate(ctx context.Context) {
	log := b.log.With("prefix", b.prefix)
	bo := backoff.New(100*time.Millisecond, b.cfg.MaxBackoff)
	for ctx.Err() == nil {
		joined, err := b.membership(ctx)
		if ctx.Err() != nil {
			return
		}
		b.m.countError(err)
		if joined {
			bo.Reset()
		}
		wait := bo.Next()
		log.Warn("bridge membership session ended; joining again", "err", err, "retry_in", wait)
		if !sleepCtx(ctx, wait) {
			return
		}
	}
}

// membership is one tenure as a member: connect, take the member lock,
// insert the row, then tick every LockRetry until ctx ends (the row is then
// deleted) or PostgreSQL fails. joined reports whether the row was written.
func (b *Bridge) membership(ctx context.Context) (joined bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, b.cfg.SessionTimeout/2)
	conn, err := pgx.ConnectConfig(cctx, b.pg)
	cancel()
	if err != nil {
		return false, opErr("members", fmt.Errorf("connect to postgres: %w", err))
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	id, err := newMemberID()
	if err != nil {
		return false, err
	}
	c := &coordinator{b: b, conn: conn, id: id, key: memberLockKey(b.prefix, id), freeTicks: make([]int, len(b.keys))}
	if err := c.join(ctx); err != nil {
		return false, err
	}
	defer c.leave(ctx)
	b.log.Info("joined the deployment's bridges", "member", id)
	t := time.NewTicker(b.cfg.LockRetry)
	defer t.Stop()
	for {
		if err := c.tick(ctx); err != nil {
			if ctx.Err() != nil {
				return true, nil
			}
			return true, err
		}
		select {
		case <-ctx.Done():
			return true, nil
		case <-t.C:
		}
	}
}

func newMemberID() (string, error) {
	var buf [8]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return "", fmt.Errorf("member id: %w", err)
	}
	return hex.EncodeToString(buf[:]), nil
}

// coordinator is one membership tenure's state.
type coordinator struct {
	b         *Bridge
	conn      *pgx.Conn
	id        string
	key       int64
	freeTicks []int // ticks in a row each shard was seen free
}

func (c *coordinator) pgCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.b.cfg.SessionTimeout/2)
}

// join takes the member lock and writes the member's row.
func (c *coordinator) join(ctx context.Context) error {
	qctx, cancel := c.pgCtx(ctx)
	defer cancel()
	var ok bool
	if err := c.conn.QueryRow(qctx, "SELECT pg_try_advisory_lock($1)", c.key).Scan(&ok); err != nil {
		return opErr("members", fmt.Errorf("take the member lock: %w", err))
	}
	if !ok {
		return opErr("members", errors.New("take the member lock: held by another session (an id clash): joining again with another id"))
	}
	return c.heartbeat(qctx)
}

// heartbeat writes the row (again, if another member deleted it as dead).
func (c *coordinator) heartbeat(ctx context.Context) error {
	host, _ := os.Hostname()
	if _, err := c.conn.Exec(ctx, joinQuery, c.id, c.b.prefix, host, os.Getpid(), c.key, c.b.bal.held()); err != nil {
		return opErr("members", fmt.Errorf("write the member row: %w", err))
	}
	return nil
}

// leave deletes the member's row, so the others count one bridge less at
// once (its shards go as its sessions end); best effort: the row dies with
// the member lock anyway. A stop that cancelled a query under way closed
// the member connection (pgx closes it on cancellation), so the delete then
// goes over a connection of its own: otherwise the last bridge to stop
// left its row for nobody to expire.
func (c *coordinator) leave(ctx context.Context) {
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	conn := c.conn
	if conn.IsClosed() {
		fresh, err := pgx.ConnectConfig(qctx, c.b.pg)
		if err != nil {
			c.b.log.Warn("could not delete the bridge's member row (it expires with its session)", "err", err)
			return
		}
		defer fresh.Close(qctx)
		conn = fresh
	}
	if _, err := conn.Exec(qctx, leaveQuery, c.id); err != nil {
		c.b.log.Warn("could not delete the bridge's member row (it expires with its session)", "err", err)
	}
}

// tick heartbeats, expires dead members, and balances the shards.
func (c *coordinator) tick(ctx context.Context) error {
	b := c.b
	qctx, cancel := c.pgCtx(ctx)
	defer cancel()
	if err := c.heartbeat(qctx); err != nil {
		return err
	}
	if tag, err := c.conn.Exec(qctx, expireQuery, b.prefix, c.id, b.cfg.SessionTimeout.Milliseconds()); err != nil {
		return opErr("members", fmt.Errorf("expire dead members: %w", err))
	} else if n := tag.RowsAffected(); n > 0 {
		b.log.Info("dead bridges removed from the members", "members", n)
	}
	rows, err := c.conn.Query(qctx, membersQuery, b.prefix)
	if err != nil {
		return opErr("members", fmt.Errorf("read the members: %w", err))
	}
	var members []member
	var m member
	if _, err := pgx.ForEachRow(rows, []any{&m.id, &m.owned}, func() error {
		members = append(members, m)
		return nil
	}); err != nil {
		return opErr("members", fmt.Errorf("read the members: %w", err))
	}
	self := -1
	for i := range members {
		if members[i].id == c.id {
			self = i
		}
	}
	if self < 0 { // deleted between our heartbeat and the read: count ourselves last
		members = append(members, member{id: c.id})
		self = len(members) - 1
	}

	keys := make([]int64, len(b.keys))
	for i, k := range b.keys {
		keys[i] = LockKey(k)
	}
	rows, err = c.conn.Query(qctx, locksQuery, keys, b.cfg.SessionTimeout.Milliseconds())
	if err != nil {
		return opErr("members", fmt.Errorf("read the shards' locks: %w", err))
	}
	locks := make([]lockView, 0, len(keys))
	var lv lockView
	if _, err := pgx.ForEachRow(rows, []any{&lv.held, &lv.silent}, func() error {
		locks = append(locks, lv)
		return nil
	}); err != nil {
		return opErr("members", fmt.Errorf("read the shards' locks: %w", err))
	}
	if len(locks) != len(keys) {
		return opErr("members", fmt.Errorf("read the shards' locks: %d rows for %d shards", len(locks), len(keys)))
	}
	states := b.bal.snapshot()
	for s := range locks {
		if locks[s].held || states[s] != shardIdle {
			c.freeTicks[s] = 0
		} else {
			c.freeTicks[s]++
		}
	}

	take, release := plan(members, self, states, locks, c.freeTicks)
	b.m.members.Set(float64(len(members)))
	b.m.share.Set(float64(share(len(b.keys), len(members), self)))
	for _, s := range release {
		if b.bal.release(s) {
			b.m.handovers.Inc()
			b.log.Info("handing a shard over to share the work", "stream", b.keys[s], "members", len(members))
		}
	}
	for _, s := range take {
		b.bal.take(s)
	}
	return nil
}
