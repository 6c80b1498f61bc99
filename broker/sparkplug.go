package broker

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"firehose/ingest"
	"firehose/sparkplug"
)

// Rows of Sparkplug B births and deaths: one per NBIRTH, DBIRTH, NDEATH and
// DDEATH message, beside the metric rows of the births, so that a device's
// sessions can be read from readings alone. Metric "sparkplug/NBIRTH" and so
// on; the value is the message's seq (bdSeq for a death); the payload says
// how many metrics a birth declared.
const spbEventMetric = "sparkplug/"

// spbLimits are the limits of Sparkplug readings: a device is
// group/edge_node[/device], so its id holds '/'.
func spbLimits(l ingest.Limits) ingest.Limits {
	l.DeviceSlash = true
	return l
}

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
// Sparkplug B is refused as invalid; a failure
// of the alias store (Redis) as unavailable. Under --mqtt-auth the client's
// username must be the edge node's id. NCMD, DCMD and STATE messages are
// delivered, not stored.
func (h *hook) publishSparkplug(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	start := time.Now()
	tp, err := sparkplug.ParseTopic(pk.TopicName)
	if err != nil {
		return h.refuseInvalid(cl, pk, err, ingest.KindSparkplug, "", start)
	}
	if tp.Type == sparkplug.NCMD || tp.Type == sparkplug.DCMD || tp.Type == sparkplug.STATE {
		if h.auth != nil && tp.Type != sparkplug.STATE && !h.mayCommand(cl, pk.TopicName) {
			// Only a publish through a topic alias gets here: OnACLCheck
			// refused the others.
			return h.refuseUnauthorized(cl, pk)
		}
		return pk, nil
	}
	if h.auth != nil && !h.mayPublish(cl, tp.EdgeNode) {
		return h.refuseUnauthorized(cl, pk)
	}
	msg, err := h.spb.Handle(h.ctx, pk.TopicName, pk.Payload)
	switch {
	case errors.Is(err, sparkplug.ErrMalformed):
		return h.refuseInvalid(cl, pk, err, ingest.KindSparkplug, tp.DeviceID(), start)
	case err != nil:
		h.log.Warn("sparkplug state unavailable", "topic", pk.TopicName, "err", err)
		return h.refuseTransient(cl, pk, "redis_unavailable")
	}
	if rb := msg.Rebirth; rb != nil && !rb.Duplicate {
		h.askRebirth(tp.Group, tp.EdgeNode)
	}
	if unresolved(msg) && pk.FixedHeader.Qos > 0 {
		// Nothing partial: the whole message is the dead letter, which a
		// replay after the rebirth lands whole, once.
		if err := h.storeDeadLetter(cl, pk, ingest.KindSparkplug, tp.DeviceID(), msg.Rebirth.Error(), start); err != nil {
			return h.refuseTransient(cl, pk, ingest.RefusalReason(err))
		}
		return pk, nil
	}
	rs, err := spbReadings(msg, start, spbLimits(h.limits))
	if err != nil {
		return h.refuseInvalid(cl, pk, err, ingest.KindSparkplug, tp.DeviceID(), start)
	}
	if len(rs) == 0 {
		return pk, nil // nothing to store (at QoS 0, a DATA before its birth): the Rebirth request is out
	}
	return h.store(cl, pk, rs, start)
}

// spbReadings turns a handled message into its rows.
func spbReadings(msg *sparkplug.Message, receivedAt time.Time, lim ingest.Limits) ([]ingest.Reading, error) {
	var ts time.Time
	if msg.Payload != nil && msg.Payload.HasTimestamp {
		ts = time.UnixMilli(int64(msg.Payload.Timestamp))
	}
	var rs []ingest.Reading
	add := func(r ingest.Reading) error {
		if r.Time.IsZero() {
			r.Time = ts
		}
		r.ReceivedAt = receivedAt
		r.Normalize()
		if err := r.Validate(lim); err != nil {
			return err
		}
		rs = append(rs, r)
		return nil
	}
	switch t := msg.Topic.Type; t {
	case sparkplug.NBIRTH, sparkplug.DBIRTH, sparkplug.NDEATH, sparkplug.DDEATH:
		seq := 0.0
		if msg.Payload != nil {
			seq = float64(msg.Payload.Seq)
		}
		body := []byte(`{"type":"` + t.String() + `"`)
		if t == sparkplug.NBIRTH || t == sparkplug.DBIRTH {
			body = strconv.AppendInt(append(body, `,"metrics":`...), int64(len(msg.Values)), 10)
		}
		if msg.Stale {
			body = append(body, `,"stale":true`...)
		}
		if err := add(ingest.Reading{DeviceID: msg.Topic.DeviceID(), Metric: spbEventMetric + t.String(), Value: seq, Payload: append(body, '}')}); err != nil {
			return nil, err
		}
	}
	for _, v := range msg.Values {
		if v.Null {
			continue
		}
		r := ingest.Reading{DeviceID: v.Device, Metric: v.Name, Time: v.Timestamp}
		extra := map[string]any{"datatype": v.Datatype.String()}
		switch {
		case v.Numeric && !math.IsNaN(v.Number) && !math.IsInf(v.Number, 0):
			r.Value = v.Number
			if v.Inexact {
				extra["inexact"] = true
			}
		case v.Numeric: // NaN, ±Inf: no number PostgreSQL's float8 takes from us
			extra["value"] = strconv.FormatFloat(v.Number, 'g', -1, 64)
		default:
			extra["value"] = v.Other
		}
		if v.Historical {
			extra["historical"] = true
		}
		b, err := json.Marshal(extra)
		if err != nil {
			return nil, err
		}
		r.Payload = b
		if err := add(r); err != nil {
			return nil, err
		}
	}
	return rs, nil
}

// askRebirth queues a Rebirth request for the edge node; the broker's
// rebirth loop publishes it (not from inside the hook, which a publish of
// the broker's own would re-enter). A full queue drops it: the edge node's
// next unresolvable message asks again.
func (h *hook) askRebirth(group, edge string) {
	select {
	case h.rebirths <- [2]string{group, edge}:
	default:
	}
}

// sendRebirths publishes the queued Rebirth requests until ctx ends.
func (h *hook) sendRebirths(ctx context.Context) {
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
