package stream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// SessionState keeps the packet id epochs of an MQTT subscriber session in
// Redis, so that the producer tells a QoS 2 message redelivered after a
// crash (same packet id, same epoch: not stored again) from a new message
// that reuses the packet id after its PUBREL (a new epoch). See Once and
// Producer.AddOnce.
//
// The subscriber loads the epochs when it connects (Epochs), names each QoS
// 2 PUBLISH by its session, packet id and the packet id's epoch (Once), and
// on each PUBREL calls Release before it sends PUBCOMP; on any error it
// answers nothing (the broker resends).
//
// The epochs live in the hash Streams.SessionKey: field sessionBase, the
// epoch of every packet id never released, and per released packet id (its
// decimal number) its epoch. Epochs are random 64-bit numbers, never 0,
// not counters: a session hash that Redis lost (a wipe, a cluster node lost
// without a replica) while the shards kept their once records gets fresh
// epochs, which no record holds, instead of counters starting again at
// values the records do hold (new messages would pass for redeliveries and
// be acknowledged without being stored). A SessionState is safe for
// concurrent use.
type SessionState struct {
	// MinReplicas is how many replicas must confirm (Redis WAIT) a change
	// of the epochs before Epochs or Release returns: set it to the
	// producer's ProducerConfig.MinReplicas (Producer.SessionState does).
	// A Release that a failover loses would make the next message of its
	// packet id pass for a redelivery. Default 0: no WAIT.
	MinReplicas int
	// ReplicaTimeout is WAIT's timeout. Default 1s.
	ReplicaTimeout time.Duration

	rdb     redis.UniversalClient
	cluster *redis.ClusterClient // rdb, when it is a cluster's
	session string
	key     string
}

// sessionBase is the field of a session's hash (Streams.SessionKey) holding
// the epoch of every packet id not released yet.
const sessionBase = "base"

// SessionKey is the hash holding session's packet id epochs (SessionState):
// <prefix>:sub:<session>. One key: it need not share a slot with the
// streams.
func (s Streams) SessionKey(session string) string { return s.prefix() + ":sub:" + session }

// NewSessionState is the epochs of session (its MQTT client id plus the
// deployment, as the subscriber names it) in the deployment of streams. Set
// MinReplicas as the producer's, or use Producer.SessionState.
func NewSessionState(rdb redis.UniversalClient, streams Streams, session string) *SessionState {
	s := &SessionState{rdb: rdb, session: session, key: streams.SessionKey(session)}
	s.cluster, _ = rdb.(*redis.ClusterClient)
	return s
}

// SessionState is NewSessionState of session in the producer's Redis and
// deployment, waiting for as many replicas as the producer does.
func (p *Producer) SessionState(session string) *SessionState {
	s := NewSessionState(p.rdb, p.streams, session)
	s.MinReplicas, s.ReplicaTimeout = p.cfg.MinReplicas, p.cfg.ReplicaTimeout
	return s
}

// Session is the session's name, for Once.Session.
func (s *SessionState) Session() string { return s.session }

// Epochs reads the epoch of every packet id of the session, 1 to 65535
// (every one is in the map), creating the session's base epoch if it has
// none, in one round trip.
func (s *SessionState) Epochs(ctx context.Context) (map[uint16]uint64, error) {
	var all *redis.MapStringStringCmd
	err := s.run(ctx, func(pipe redis.Pipeliner) {
		pipe.HSetNX(ctx, s.key, sessionBase, strconv.FormatUint(newEpoch(), 10))
		all = pipe.HGetAll(ctx, s.key)
	})
	if err != nil {
		return nil, fmt.Errorf("load the epochs of session %q from %s: %w", s.session, s.key, err)
	}
	epochs, err := parseEpochs(all.Val())
	if err != nil {
		return nil, fmt.Errorf("load the epochs of session %q from %s: %w", s.session, s.key, err)
	}
	return epochs, nil
}

// Start reads the session's epochs as Epochs does. When the broker kept no
// session (present is false: a first connection, an expired session, a
// broker that lost its state), it first moves every packet id to a new
// epoch: the broker forgot what it had in flight, so no message of the new
// session is a redelivery of one stored before, even one that reuses the
// packet id of a message stored and never released.
func (s *SessionState) Start(ctx context.Context, present bool) (map[uint16]uint64, error) {
	if !present {
		err := s.run(ctx, func(pipe redis.Pipeliner) {
			pipe.Del(ctx, s.key)
			pipe.HSet(ctx, s.key, sessionBase, strconv.FormatUint(newEpoch(), 10))
		})
		if err != nil {
			return nil, fmt.Errorf("start session %q afresh in %s: %w", s.session, s.key, err)
		}
	}
	return s.Epochs(ctx)
}

// parseEpochs reads a session's hash: every packet id has the base epoch
// unless a field of its own says otherwise. Fields that are no packet id
// are ignored.
func parseEpochs(h map[string]string) (map[uint16]uint64, error) {
	base, err := strconv.ParseUint(h[sessionBase], 10, 64)
	if err != nil || base == 0 {
		return nil, fmt.Errorf("field %s is %q, want a number other than 0", sessionBase, h[sessionBase])
	}
	epochs := make(map[uint16]uint64, 65535)
	for pid := 1; pid <= 65535; pid++ {
		epochs[uint16(pid)] = base
	}
	for f, v := range h {
		pid, err := strconv.ParseUint(f, 10, 16)
		if err != nil || pid == 0 {
			continue
		}
		e, err := strconv.ParseUint(v, 10, 64)
		if err != nil || e == 0 {
			return nil, fmt.Errorf("packet id %s has epoch %q, want a number other than 0", f, v)
		}
		epochs[uint16(pid)] = e
	}
	return epochs, nil
}

// Release gives packet id pid a new epoch, once Redis (and MinReplicas
// replicas) confirmed it, and returns it: the next message with pid is to
// be stored with it. Call it on PUBREL, before PUBCOMP; on error do not
// send PUBCOMP. Releasing twice (a PUBREL resent after a crash) is harmless:
// only a message's epoch differing from the last one stored matters.
func (s *SessionState) Release(ctx context.Context, pid uint16) (uint64, error) {
	if pid == 0 {
		return 0, errors.New("release packet id 0: packet ids are 1 to 65535")
	}
	e := newEpoch()
	err := s.run(ctx, func(pipe redis.Pipeliner) {
		pipe.HSet(ctx, s.key, strconv.Itoa(int(pid)), strconv.FormatUint(e, 10))
	})
	if err != nil {
		return 0, fmt.Errorf("release packet id %d of session %q in %s: %w", pid, s.session, s.key, err)
	}
	return e, nil
}

// run sends the commands queue puts on a pipeline of the session key's
// primary, followed by WAIT when MinReplicas > 0, and returns the first
// error. On a cluster the pipeline is the node's own, as the producer's
// (see Producer.pipeFor): a cluster pipeline routes a keyless WAIT to any
// node.
func (s *SessionState) run(ctx context.Context, queue func(redis.Pipeliner)) error {
	var pipe redis.Pipeliner
	if s.cluster != nil {
		node, err := s.cluster.MasterForKey(ctx, s.key)
		if err != nil {
			return fmt.Errorf("find the primary: %w", err)
		}
		pipe = node.Pipeline()
	} else {
		pipe = s.rdb.Pipeline()
	}
	queue(pipe)
	cmds := pipe.Cmds()
	timeout := s.ReplicaTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	var wait *redis.IntCmd
	if s.MinReplicas > 0 {
		wait = redis.NewIntCmd(ctx, "wait", s.MinReplicas, timeout.Milliseconds())
		_ = pipe.Process(ctx, wait)
	}
	_, _ = pipe.Exec(ctx) // each command's error is read below
	if err, _ := cmdsErr(cmds); err != nil {
		return err
	}
	return waitErr(wait, s.MinReplicas, timeout)
}

// newEpoch is a random epoch, never 0 (a once record never written reads
// as 0).
func newEpoch() uint64 {
	for {
		if e := rand.Uint64(); e != 0 {
			return e
		}
	}
}
