package broker

import (
	"container/list"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// sessions bounds what the sessions of disconnected clients hold.
//
// mochi keeps the session of a client that asked for it (3.1.1 clean
// session off, MQTT 5 session expiry > 0) until it expires, and queues every
// QoS 1/2 message of its subscriptions in it, up to the per-session
// maximum. Left alone, a few hundred subscribers to devices/# that went
// away hold gigabytes. So:
//
//   - at most maxSessions disconnected sessions are kept: past it the one
//     disconnected longest is evicted (its subscriptions and queued
//     messages dropped, as if it had expired);
//   - at most maxInflight messages are queued for one disconnected session
//     (mochi's own check of MaximumInflight, which this repeats, comes after
//     it has copied the message), and at most maxQueued for all of them
//     together;
//   - a disconnected session whose queue is full, or that finds the total
//     full, is parked: its subscriptions leave mochi's topic index (they
//     stay in the session, and mochi puts them back in the index when the
//     client resumes it), so that mochi no longer copies every message for
//     it only to drop it — with 200 such sessions, that copying alone
//     slowed publishing to a few hundred readings a second. Messages
//     published meanwhile are not queued for it (a reading stays durable in
//     Redis and PostgreSQL);
//   - mochi's expiry of a session now also drops its subscriptions and
//     queued messages (v2.7.9 only forgets the client, leaving its
//     subscriptions in the topic index: a later client of the same id would
//     receive them).
//
// Eviction holds mu while it removes the session from mochi, and a client
// connecting under the same id removes the id from the table under mu
// (OnSessionEstablish, before mochi looks for the session to resume), so an
// eviction never removes a session that is being resumed.
type sessions struct {
	srv         *mqtt.Server
	maxSessions int
	maxInflight int
	maxQueued   int64
	m           *metrics

	mu     sync.RWMutex
	byID   map[string]*list.Element // of *offline
	order  list.List                // oldest disconnect first
	queued atomic.Int64             // sum of offline.held
}

// offline is a disconnected session.
type offline struct {
	cl     *mqtt.Client
	since  time.Time
	held   atomic.Int64 // its queued messages when last looked at
	parked atomic.Bool  // its subscriptions are out of the topic index
}

func newSessions(srv *mqtt.Server, maxSessions, maxInflight int, maxQueued int64, m *metrics) *sessions {
	return &sessions{srv: srv, maxSessions: maxSessions, maxInflight: maxInflight, maxQueued: maxQueued, m: m, byID: map[string]*list.Element{}}
}

// disconnected records that cl went away keeping its session, and evicts
// the oldest sessions past the bound.
func (s *sessions) disconnected(cl *mqtt.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byID[cl.ID]; ok {
		s.removeLocked(e)
	}
	o := &offline{cl: cl, since: time.Now()}
	o.held.Store(int64(cl.State.Inflight.Len()))
	s.queued.Add(o.held.Load())
	s.byID[cl.ID] = s.order.PushBack(o)
	for s.order.Len() > s.maxSessions {
		s.evictLocked(s.order.Front())
	}
}

// resumed forgets the session of id: a client of that id is connecting.
func (s *sessions) resumed(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byID[id]; ok {
		s.removeLocked(e)
	}
}

// expired cleans up after mochi expires cl's session.
func (s *sessions) expired(cl *mqtt.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byID[cl.ID]; ok && e.Value.(*offline).cl == cl {
		s.removeLocked(e)
	}
	s.srv.UnsubscribeClient(cl)
	cl.ClearInflights()
}

func (s *sessions) removeLocked(e *list.Element) {
	o := e.Value.(*offline)
	s.queued.Add(-o.held.Load())
	s.order.Remove(e)
	delete(s.byID, o.cl.ID)
}

// evictLocked drops the session of e from mochi, if it still is the
// disconnected session of its id.
func (s *sessions) evictLocked(e *list.Element) {
	o := e.Value.(*offline)
	s.removeLocked(e)
	if cur, ok := s.srv.Clients.Get(o.cl.ID); !ok || cur != o.cl || !o.cl.Closed() || o.cl.IsTakenOver() {
		return
	}
	s.srv.UnsubscribeClient(o.cl)
	o.cl.ClearInflights()
	s.srv.Clients.Delete(o.cl.ID)
	s.m.sessionsEvicted.Inc()
}

// mayQueue reports whether a message may be delivered to cl now: always
// for a connected client; for a disconnected one, while the messages queued
// for all disconnected sessions stay under the bound. mochi asks before
// each delivery (OnACLCheck), before it queues the message.
func (s *sessions) mayQueue(cl *mqtt.Client) bool {
	if !cl.Closed() {
		return true
	}
	// The read lock keeps removeLocked, which subtracts what the session
	// held, from running between the swap and the add below.
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.byID[cl.ID]
	if !ok {
		return true // closing, not yet recorded: bounded by the per-session maximum
	}
	o := e.Value.(*offline)
	if o.cl != cl {
		return true
	}
	// Bring the total up to what this session holds now: the messages it
	// was given since, less those expired.
	n := int64(cl.State.Inflight.Len())
	if old := o.held.Swap(n); old != n {
		s.queued.Add(n - old)
	}
	switch {
	case n >= int64(s.maxInflight):
		s.park(o, "session_queue_full")
		return false
	case s.queued.Load() >= s.maxQueued:
		s.park(o, "offline_queue_full")
		return false
	}
	return true
}

// park takes the subscriptions of o's session out of mochi's topic index
// (once), keeping them in the session for its client to resume. The caller
// holds mu for reading, so the session is not being resumed or evicted.
func (s *sessions) park(o *offline, reason string) {
	if o.parked.Swap(true) {
		return
	}
	for filter := range o.cl.State.Subscriptions.GetAll() {
		if s.srv.Topics.Unsubscribe(filter, o.cl.ID) {
			atomic.AddInt64(&s.srv.Info.Subscriptions, -1)
		}
	}
	s.m.sessionsParked.WithLabelValues(reason).Inc()
}

// count is the number of disconnected sessions kept.
func (s *sessions) count() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.order.Len()
}
