package bridge

import (
	"context"
	"sync"
)

// shardState is where a shard stands with this bridge.
type shardState uint8

const (
	shardIdle      shardState = iota // not this bridge's; its worker holds no connection
	shardTaking                      // told to take it: connecting, trying the lock, or backing off first
	shardOwned                       // this bridge holds its lock
	shardReleasing                   // handing it over: committing the batch in hand, then releasing the lock
)

// balancer is what the coordinator (members.go) and the shard workers share:
// each shard's state here, a way to tell an idle worker to take its shard,
// and a way to make an owning session hand its shard over. It decides
// nothing: plan does, from what PostgreSQL shows.
type balancer struct {
	mu    sync.Mutex
	state []shardState
	stop  []context.CancelFunc // of each owned session: ends it after the batch in hand
	grant []chan struct{}      // one slot each: take the shard
}

func newBalancer(n int) *balancer {
	bl := &balancer{state: make([]shardState, n), stop: make([]context.CancelFunc, n), grant: make([]chan struct{}, n)}
	for i := range bl.grant {
		bl.grant[i] = make(chan struct{}, 1)
	}
	return bl
}

// snapshot copies the states.
func (bl *balancer) snapshot() []shardState {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	return append([]shardState(nil), bl.state...)
}

// held counts the shards whose lock this bridge holds (owned or handing over).
func (bl *balancer) held() int {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	n := 0
	for _, s := range bl.state {
		if s == shardOwned || s == shardReleasing {
			n++
		}
	}
	return n
}

// take tells the worker of an idle shard to take it.
func (bl *balancer) take(shard int) {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	if bl.state[shard] != shardIdle {
		return
	}
	bl.state[shard] = shardTaking
	select {
	case bl.grant[shard] <- struct{}{}:
	default:
	}
}

// release makes the session owning shard hand it over after the batch in
// hand; false if the shard is not (or no longer) owned.
func (bl *balancer) release(shard int) bool {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	if bl.state[shard] != shardOwned || bl.stop[shard] == nil {
		return false
	}
	bl.state[shard] = shardReleasing
	bl.stop[shard]()
	return true
}

// acquired records that a session took shard's lock; stop ends the session
// (after its batch in hand) when the shard is to be handed over.
func (bl *balancer) acquired(shard int, stop context.CancelFunc) {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	bl.state[shard] = shardOwned
	bl.stop[shard] = stop
}

// handingOver reports whether shard's session is ending to hand it over.
func (bl *balancer) handingOver(shard int) bool {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	return bl.state[shard] == shardReleasing
}

// retrying records that shard's session failed and its worker tries again
// after a backoff: the shard still counts as being taken.
func (bl *balancer) retrying(shard int) {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	bl.state[shard] = shardTaking
	bl.stop[shard] = nil
}

// ended records that shard's session is over (its lock released, or never
// taken): the shard is idle until the coordinator says otherwise.
func (bl *balancer) ended(shard int) {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	bl.state[shard] = shardIdle
	bl.stop[shard] = nil
}

// member is a live bridge of the deployment as its row in bridge_members
// shows it.
type member struct {
	id    string
	owned int // shards it held at its last heartbeat
}

// lockView is a shard's lock as pg_locks shows it.
type lockView struct {
	held   bool // some session holds it
	silent bool // its holder has shown no activity for the session timeout (see evictStale)
}

// share is how many of n shards the member at position pos (by started_at,
// id) of k live members owns: floor(n/k), one more for the first n mod k.
// Every member computes the same shares from the same rows, so they add up
// to n and none exceeds ceil(n/k).
func share(n, k, pos int) int {
	if k <= 0 {
		return n
	}
	s := n / k
	if pos < n%k {
		s++
	}
	return s
}

// plan decides what the bridge at position self of the live members does
// with the shards: states are its own shards' states, locks what pg_locks
// shows of every shard's lock, freeTicks how many ticks in a row each shard
// has been seen free (1 the first time).
//
// Above its share, it hands over its highest-numbered shards: ownership
// converges on the low-numbered ones staying put, and a shard handed over is
// not taken back (the bridge is then at its share). Below its share, it takes
// shards nobody holds, then shards held by a silent session (a frozen
// bridge's; taking them ends that session, see evictStale). Free shards are
// dealt out in member order, each member getting as many as it is below its
// share by its last heartbeat, so that two bridges rarely reach for the same
// shard; a shard still free on a later tick goes to any member below its
// share (the dealing may have been based on stale counts, or its member
// failed to take it). Two bridges reaching for one shard is harmless: the
// advisory lock lets one in.
func plan(members []member, self int, states []shardState, locks []lockView, freeTicks []int) (take, release []int) {
	n := len(states)
	mine := 0
	for _, s := range states {
		if s == shardTaking || s == shardOwned {
			mine++
		}
	}
	want := share(n, len(members), self)
	if mine > want {
		for s := n - 1; s >= 0 && mine > want; s-- {
			if states[s] == shardOwned {
				release = append(release, s)
				mine--
			}
		}
		return nil, release
	}
	if mine == want {
		return nil, nil
	}
	var cands, lingering []int
	for s := range n {
		if states[s] != shardIdle {
			continue
		}
		switch {
		case !locks[s].held:
			cands = append(cands, s)
			if freeTicks[s] > 1 {
				lingering = append(lingering, s)
			}
		case locks[s].silent:
			lingering = append(lingering, s)
		}
	}
	// The dealing: skip the shards of the members before self.
	skip := 0
	for i, m := range members[:self] {
		skip += max(0, share(n, len(members), i)-m.owned)
	}
	picked := map[int]bool{}
	for _, s := range cands[min(skip, len(cands)):] {
		if mine == want {
			break
		}
		take = append(take, s)
		picked[s] = true
		mine++
	}
	for _, s := range lingering {
		if mine == want {
			break
		}
		if !picked[s] {
			take = append(take, s)
			picked[s] = true
			mine++
		}
	}
	return take, nil
}
