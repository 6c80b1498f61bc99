package mqttmsg

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

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

// unresolved reports whether a Sparkplug B message handled by the tracker
// cannot be stored as rows now: its birth is not known, or one of its
// aliases or names is not.
func unresolved(msg *sparkplug.Message) bool {
	rb := msg.Rebirth
	return rb != nil && (rb.Reason == sparkplug.NotBorn || rb.Reason == sparkplug.UnknownAlias)
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
