package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"firehose/stream"
)

// start reads the checkpoint and the shard's metadata in Redis, and sets the
// cursor:
//
//   - no checkpoint: from the start of the stream;
//   - the checkpoint's generation is the stream's (or the checkpoint has
//     none yet, written before schema 003: it adopts the stream's): the
//     stream is the one the checkpoint was taken on, perhaps with a lost
//     tail (restored from a snapshot or an AOF, a promoted replica). The
//     cursor stays at the checkpoint, so nothing committed is read again;
//     the stream's last id is raised to the checkpoint so new entries get
//     ids above it even if Redis's clock is behind; what a previous owner
//     committed but did not trim is trimmed;
//   - another generation: Redis lost everything and the stream is new: from
//     its start; the new generation is written with the next checkpoint.
//
// A shard whose metadata names another deployment is refused with
// ErrDeploymentMismatch.
func (s *session) start(ctx context.Context) error {
	var (
		deployment string
		last, gen  *string
	)
	qctx, cancel := s.pgCtx(ctx)
	err := s.conn.QueryRow(qctx, `SELECT d.id::text, c.last_id, c.generation
		FROM firehose_deployment d LEFT JOIN bridge_checkpoints c ON c.stream = $1`, s.key).Scan(&deployment, &last, &gen)
	cancel()
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return opErr("commit", fmt.Errorf("read checkpoint of %s: table firehose_deployment is empty: restore its row (schema 003) or migrate a new database", s.key))
	case err != nil:
		return opErr("commit", fmt.Errorf("read checkpoint of %s: %w", s.key, err))
	}
	s.usedPG = time.Now()
	s.deployment = deployment

	meta, err := stream.ClaimShardMeta(ctx, s.b.rdb, s.b.cfg.Streams, s.shard, deployment)
	if err != nil {
		return opErr("read", err)
	}
	if meta.Deployment != deployment {
		return s.mismatch(meta.Deployment)
	}
	s.gen = meta.Generation

	if last == nil {
		s.cursor = stream.StreamID{}
		return nil
	}
	cp, err := stream.ParseStreamID(*last)
	if err != nil {
		return opErr("commit", fmt.Errorf("checkpoint of %s: %w", s.key, err))
	}
	switch {
	case gen == nil:
		s.log.Info("checkpoint without a generation (written before schema 003): adopting the stream's", "checkpoint", cp.String(), "generation", s.gen)
	case *gen != s.gen:
		s.b.m.newStream.Inc()
		s.log.Warn("Redis lost the stream (its generation token changed): reading the new stream from its start",
			"checkpoint", cp.String(), "checkpoint_generation", *gen, "generation", s.gen)
		s.cursor = stream.StreamID{}
		return nil
	}
	s.cursor = cp
	raised, err := s.raise(ctx)
	if err != nil {
		return opErr("read", fmt.Errorf("raise the last id of %s to its checkpoint: %w", s.key, err))
	}
	if raised {
		s.log.Warn("the stream lost entries after its checkpoint (Redis restarted from older data): its last id was raised to the checkpoint",
			"checkpoint", cp.String())
	}
	// What a previous owner committed and did not trim: trim counts it.
	s.untrimmed = -1
	s.trim(ctx)
	return nil
}

// mismatch is the error of a shard claimed by another deployment.
func (s *session) mismatch(other string) error {
	key := s.b.cfg.Streams.ShardMetaKey(s.shard)
	return fmt.Errorf("%w: Redis prefix %q: %s names deployment %q, but this bridge's database is deployment %s. "+
		"Two databases must not share a Redis prefix (each would trim the other's streams): give this database's deployment its own --redis-prefix; "+
		"or, if this database replaces the other one for good and the streams' entries are to go into it, delete the old claim "+
		"(HDEL %s %s on each shard's <prefix>:meta:{tag}) and start again",
		ErrDeploymentMismatch, s.b.cfg.Streams.Prefix, key, other, s.deployment, key, stream.MetaDeployment)
}

// raise runs stream.RaiseScript for the cursor (the checkpoint).
func (s *session) raise(ctx context.Context) (bool, error) {
	n, err := stream.RaiseScript.Run(ctx, s.b.rdb, []string{s.b.cfg.Streams.ShardMetaKey(s.shard), s.key},
		s.gen, s.deployment, s.cursor.MS, s.cursor.Seq).Int()
	switch {
	case err != nil:
		return false, err
	case n < 0:
		return false, errMetaChanged
	}
	return n == 1, nil
}

// errMetaChanged: the shard's metadata hash no longer holds this session's
// generation or deployment (Redis lost it, or another deployment claimed the
// shard); the session ends and the next one decides again.
var errMetaChanged = errors.New("the shard's metadata in Redis changed (Redis lost its data, or another deployment claimed the shard)")

// checkMeta verifies, after a read, that the shard's metadata still holds
// this session's generation and deployment. If it does, the entries just
// read belong to the stream the session started on (Redis cannot lose the
// token and keep them). If not, they may be a new stream's: the caller drops
// them and ends the session after committing what it holds, and the next
// session reads the new stream from its start.
func (s *session) checkMeta(ctx context.Context) error {
	meta, err := stream.ReadShardMeta(ctx, s.b.rdb, s.b.cfg.Streams, s.shard)
	switch {
	case err != nil:
		return opErr("read", err)
	case meta.Deployment != "" && meta.Deployment != s.deployment:
		return s.mismatch(meta.Deployment)
	case meta.Generation != s.gen || meta.Deployment != s.deployment:
		return opErr("read", fmt.Errorf("%s: %w", s.key, errMetaChanged))
	}
	return nil
}

// trim removes the entries at or below the cursor (the checkpoint, after a
// flush), only while the shard's metadata holds this session's generation and
// deployment: never a new stream's entries, nor another deployment's. A
// failed trim is harmless: the next one covers it.
func (s *session) trim(ctx context.Context) {
	if s.cursor == (stream.StreamID{}) {
		return
	}
	n, err := stream.TrimScript.Run(ctx, s.b.rdb, []string{s.b.cfg.Streams.ShardMetaKey(s.shard), s.key},
		s.gen, s.deployment, s.cursor.Next().String(), s.untrimmed).Int()
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.Warn("trim stream", "err", err)
	case err == nil && n < 0:
		s.log.Warn("not trimming: the shard's metadata in Redis changed", "err", errMetaChanged)
	case err == nil:
		s.untrimmed = 0
	}
}
