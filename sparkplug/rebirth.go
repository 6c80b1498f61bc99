package sparkplug

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
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
	m = protowire.AppendTag(m, 1, protowire.BytesType) // name
	m = protowire.AppendString(m, RebirthMetric)
	m = protowire.AppendTag(m, 3, protowire.VarintType) // timestamp
	m = protowire.AppendVarint(m, ts)
	m = protowire.AppendTag(m, 4, protowire.VarintType) // datatype
	m = protowire.AppendVarint(m, uint64(Boolean))
	m = protowire.AppendTag(m, 14, protowire.VarintType) // boolean_value
	m = protowire.AppendVarint(m, protowire.EncodeBool(true))

	var p []byte
	p = protowire.AppendTag(p, 1, protowire.VarintType) // timestamp
	p = protowire.AppendVarint(p, ts)
	p = protowire.AppendTag(p, 2, protowire.BytesType) // metrics
	p = protowire.AppendBytes(p, m)
	return Topic{Type: NCMD, Group: group, EdgeNode: edgeNode}.String(), p, nil
}
