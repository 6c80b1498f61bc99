package sparkplug

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"firehose/internal/spbwire"
)

// RebirthMetric is the NCMD metric that asks an edge node to publish its
// NBIRTH and DBIRTHs again (Sparkplug 3.0, "Node Control/Rebirth").
const RebirthMetric = "Node Control/Rebirth"

// RebirthRequest returns the NCMD topic and payload that ask the edge node
// to rebirth: one Boolean metric "Node Control/Rebirth" = true, with now as
// the payload's and the metric's timestamp (ms). Publish it at QoS 0, not
// retained, as the specification asks.
func RebirthRequest(group, edgeNode string, now time.Time) (topic string, payload []byte, err error) {
	for _, id := range []struct{ name, v string }{{"group_id", group}, {"edge_node_id", edgeNode}} {
		if why := checkID(id.name, id.v); why != "" {
			return "", nil, fmt.Errorf("rebirth request: %s: %w", why, ErrMalformed)
		}
		if strings.Contains(id.v, "/") {
			return "", nil, fmt.Errorf("rebirth request: %s %q holds a '/': %w", id.name, id.v, ErrMalformed)
		}
	}
	ts := uint64(max(now.UnixMilli(), 0))
	var m []byte
	m = protowire.AppendTag(m, spbwire.MetricName, protowire.BytesType)
	m = protowire.AppendString(m, RebirthMetric)
	m = protowire.AppendTag(m, spbwire.MetricTimestamp, protowire.VarintType)
	m = protowire.AppendVarint(m, ts)
	m = protowire.AppendTag(m, spbwire.MetricDatatype, protowire.VarintType)
	m = protowire.AppendVarint(m, spbwire.Boolean)
	m = protowire.AppendTag(m, spbwire.MetricBooleanValue, protowire.VarintType)
	m = protowire.AppendVarint(m, protowire.EncodeBool(true))

	var p []byte
	p = protowire.AppendTag(p, spbwire.PayloadTimestamp, protowire.VarintType)
	p = protowire.AppendVarint(p, ts)
	p = protowire.AppendTag(p, spbwire.PayloadMetrics, protowire.BytesType)
	p = protowire.AppendBytes(p, m)
	return Topic{Type: NCMD, Group: group, EdgeNode: edgeNode}.String(), p, nil
}
