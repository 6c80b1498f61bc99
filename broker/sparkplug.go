package broker

import (
	"context"
	"errors"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"firehose/ingest"
	"firehose/mqttmsg"
	"firehose/sparkplug"
)

// publishSparkplug stores the metrics of a Sparkplug B message
// (spBv1.0/{group}/{type}/{edge_node}[/{device}]): each metric value a row
// (device group/edge_node[/device], metric its name, ts its timestamp or the
// payload's or the receipt, a numeric value as reading and anything else in
// the payload), plus a row for each birth and death, all acknowledged
// together. A DATA message with an alias no birth certificate gave, before
// its birth, or after a gap in seq gets a Rebirth request (NCMD
// "Node Control/Rebirth") to its edge node. After a seq gap everything
// lands; a message that does not resolve (before its birth, an unknown
// alias or name) is at QoS 1/2 written whole as an edge dead letter before
// its acknowledgement (none of its values lands until a replay lands them
// all), and at QoS 0 what did resolve lands. A payload that is not
// Sparkplug B is refused as invalid; a failure of the alias store (Redis)
// as unavailable. Under --mqtt-auth the client must be the edge node (its
// username the edge node id) in a group its credentials name, or granted
// the topic (mayWrite). NCMD, DCMD and STATE messages are delivered, not
// stored.
func (h *ingestHook) publishSparkplug(cl *mqtt.Client, pk packets.Packet, rt mqttmsg.Route) (packets.Packet, error) {
	start := time.Now()
	if rt.Err != nil {
		return h.refuseInvalid(cl, pk, rt.Err, ingest.KindSparkplug, "", start)
	}
	tp := rt.Sparkplug
	if rt.Command() {
		if h.acl != nil && tp.Type != sparkplug.STATE && !h.acl.mayCommand(cl, pk.TopicName) {
			// Only a publish through a topic alias gets here: OnACLCheck
			// refused the others.
			return h.refuseUnauthorized(cl, pk)
		}
		return pk, nil
	}
	if h.acl != nil && !h.acl.mayWrite(cl, pk.TopicName) {
		return h.refuseUnauthorized(cl, pk)
	}
	res, err := h.read.Read(h.ctx, rt, mqttmsg.Message{Topic: pk.TopicName, Payload: pk.Payload, QoS: pk.FixedHeader.Qos, ReceivedAt: start, Owner: h.spbOwner(cl)})
	switch {
	case errors.Is(err, mqttmsg.ErrStateUnavailable):
		h.log.Warn("sparkplug state unavailable", "topic", pk.TopicName, "err", err)
		return h.refuseTransient(cl, pk, "redis_unavailable")
	case errors.Is(err, sparkplug.ErrQuota), errors.Is(err, sparkplug.ErrStateTooLarge):
		return h.refuseSparkplugState(cl, pk, err, rt.Device(), start)
	}
	// The edge node's state changed, even if its rows are invalid.
	if res.Session != "" && !h.spbLive.started(cl, tp.Node(), res.Session) {
		// The connection ended already (a will, or a race with its end).
		if err := h.spb.EndSession(h.ctx, tp.Node(), res.Session); err != nil {
			h.log.Warn("sparkplug state expiry not set", "node", tp.Node(), "err", err)
		}
	}
	if res.Rebirth != nil {
		h.askRebirth(tp.Group, tp.EdgeNode)
	}
	switch {
	case err != nil:
		return h.refuseInvalid(cl, pk, err, ingest.KindSparkplug, rt.Device(), start)
	case res.Unresolved != nil:
		// Nothing partial: the whole message is the dead letter, which a
		// replay after the rebirth lands whole, once.
		if err := h.storeDeadLetter(cl, pk, ingest.KindSparkplug, rt.Device(), res.Unresolved.Error(), start); err != nil {
			return h.refuseTransient(cl, pk, ingest.RefusalReason(err))
		}
		return pk, nil
	case len(res.Readings) == 0:
		return pk, nil // nothing to store (at QoS 0, a DATA before its birth): the Rebirth request is out
	}
	return h.store(cl, pk, res.Readings, start)
}

// askRebirth queues a Rebirth request for the edge node; the broker's
// rebirth loop publishes it (not from inside the hook, which a publish of
// the broker's own would re-enter). A full queue drops it: the edge node's
// next unresolvable message asks again.
func (h *ingestHook) askRebirth(group, edge string) {
	select {
	case h.rebirths <- [2]string{group, edge}:
	default:
	}
}

// sendRebirths publishes the queued Rebirth requests until ctx ends.
func (h *ingestHook) sendRebirths(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-h.rebirths:
			topic, payload, err := sparkplug.RebirthRequest(n[0], n[1], time.Now())
			if err == nil {
				err = h.srv.Publish(topic, payload, false, 0)
			}
			if err != nil {
				h.log.Warn("sparkplug rebirth request not sent", "group", n[0], "edge_node", n[1], "err", err)
				continue
			}
			h.m.rebirths.Inc()
		}
	}
}

// spbOwner is the credential a client's Sparkplug B state counts against:
// its username under --mqtt-auth or a client certificate, else its client
// id.
func (h *ingestHook) spbOwner(cl *mqtt.Client) string {
	if h.acl != nil && !h.acl.open(cl) {
		return string(cl.Properties.Username)
	}
	return cl.ID
}

// refuseSparkplugState answers a birth past the Sparkplug state bounds
// (--sparkplug-max-nodes: 0x97 quota exceeded; --sparkplug-max-node-bytes:
// 0x95 packet too large; MQTT 5, with the reason). An MQTT 3.1.1 client is
// answered as for a reading that could not be stored now (no
// acknowledgement, disconnected) when over its quota, which frees up as its
// other nodes die, and as for an invalid payload when
// the birth itself is too large, which no retry changes (an MQTT 3.1.1
// client's is then stored as an edge dead letter before its acknowledgement).
func (h *ingestHook) refuseSparkplugState(cl *mqtt.Client, pk packets.Packet, err error, dev string, start time.Time) (packets.Packet, error) {
	quota := errors.Is(err, sparkplug.ErrQuota)
	if pk.FixedHeader.Qos > 0 && cl.Properties.ProtocolVersion == 5 {
		code, reason := packets.ErrPacketTooLarge, "sparkplug_too_large"
		if quota {
			code, reason = packets.ErrQuotaExceeded, "sparkplug_quota"
		}
		h.m.refused.WithLabelValues(reason).Inc()
		code.Reason = truncateReason(err.Error())
		return h.refuseV5(cl, pk, code)
	}
	if quota {
		return h.refuseTransient(cl, pk, "sparkplug_quota")
	}
	return h.refuseInvalid(cl, pk, err, ingest.KindSparkplug, dev, start)
}

// spbSessions remembers the Sparkplug B sessions each connection's NBIRTHs
// started, so that their state expires when the connection ends. At most
// --sparkplug-max-nodes per credential are started.
type spbSessions struct {
	mu sync.Mutex
	by map[*mqtt.Client]map[string]string // node -> session
}

func newSpbSessions() *spbSessions {
	return &spbSessions{by: map[*mqtt.Client]map[string]string{}}
}

// started records that cl's NBIRTH of node started session, and reports
// whether it did: not once cl is closed (its OnDisconnect, which calls
// ended after the close, may have run).
func (s *spbSessions) started(cl *mqtt.Client, node, session string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl.Closed() {
		return false
	}
	if s.by[cl] == nil {
		s.by[cl] = map[string]string{}
	}
	s.by[cl][node] = session
	return true
}

// ended forgets cl and returns its sessions.
func (s *spbSessions) ended(cl *mqtt.Client) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.by[cl]
	delete(s.by, cl)
	return m
}

// endSparkplugSessions starts the expiry (--sparkplug-state-ttl) of the
// state of every edge node whose NBIRTH cl published, unless a later
// NBIRTH (another connection's, after a takeover) or its NDEATH came first.
func (h *ingestHook) endSparkplugSessions(cl *mqtt.Client) {
	if h.spb == nil {
		return
	}
	for node, session := range h.spbLive.ended(cl) {
		if err := h.spb.EndSession(h.ctx, node, session); err != nil {
			// The state stays without a TTL until its next birth or death.
			h.log.Warn("sparkplug state expiry not set", "node", node, "err", err)
		}
	}
}

// sparkplugSweepInterval is how often the broker removes the expired
// Sparkplug state and reads its account.
const sparkplugSweepInterval = 10 * time.Second

// sweepSparkplug removes the expired Sparkplug B state and updates
// firehose_sparkplug_state_bytes and _nodes, until ctx ends.
func (h *ingestHook) sweepSparkplug(ctx context.Context) {
	t := time.NewTicker(sparkplugSweepInterval)
	defer t.Stop()
	for {
		st, err := h.spb.Sweep(ctx)
		if err == nil {
			h.m.spbStateBytes.Set(float64(st.Bytes))
			h.m.spbStateNodes.Set(float64(st.Nodes))
		} else if ctx.Err() == nil {
			h.log.Debug("sparkplug state sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
