package simulator

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/encoding/protowire"

	"firehose/internal/spbwire"
)

// Sparkplug B names the edge nodes use (Sparkplug 3.0).
const (
	spNamespace  = "spBv1.0"
	spBdSeq      = "bdSeq"
	spRebirth    = "Node Control/Rebirth"
	spEventRows  = "sparkplug/" // metric prefix of the rows of births and deaths
	spBogusAlias = 1 << 40      // an alias no birth gives (--sparkplug-rebirth-every)
	// spRebirthWait is how long an edge node that forced a rebirth and was
	// not asked for one yet waits for the request before its NDEATH.
	spRebirthWait = 3 * time.Second
)

// Aliases: bdSeq 1, Node Control/Rebirth 2, node metric i 10+i, metric i of
// device k (from 1) 1000*k+i: unique across a node and its devices.
func spAlias(device, i int) uint64 {
	if device == 0 {
		return 10 + uint64(i)
	}
	return 1000*uint64(device) + uint64(i)
}

// edgeNode is the Sparkplug B state of a device of the shape sparkplug: an
// edge node (id: the device's id) of group sim-<run>, with
// Config.SparkplugDevices devices d1, d2, ... Its fields are its device
// goroutine's, but for rebirth and asked, which the MQTT client's
// callback writes.
type edgeNode struct {
	group, node string
	seq         uint64 // the next message's seq, 0..255
	bdSeq       uint64
	ndata       int // NDATA sent, for --sparkplug-rebirth-every
	forced      int // NDATA sent with an alias no birth gave
	rebirth     chan struct{}
	asked       atomic.Int64 // Rebirth requests received
}

func (e *edgeNode) topic(typ, device string) string {
	t := spNamespace + "/" + e.group + "/" + typ + "/" + e.node
	if device != "" {
		t += "/" + device
	}
	return t
}

// nextSeq is the seq of the next message, wrapping after 255.
func (e *edgeNode) nextSeq() uint64 {
	s := e.seq
	e.seq = (e.seq + 1) % 256
	return s
}

// sparkplugGroup is the run's Sparkplug group: every row device id starts
// with it and a '/'.
func (c *Config) sparkplugGroup() string { return "sim-" + c.RunID }

// newEdgeNode makes device d an edge node: its ledger is the node's rows
// (device group/node), its subs those of its devices.
func (f *fleet) newEdgeNode(d *device) {
	e := &edgeNode{group: f.cfg.sparkplugGroup(), node: d.id, rebirth: make(chan struct{}, 1)}
	d.edge = e
	d.rowID = e.group + "/" + e.node
	d.metrics, d.birthMetrics = f.names, f.nodeBirthNames
	for k := 1; k <= f.cfg.SparkplugDevices; k++ {
		d.subs = append(d.subs, &ledger{rowID: d.rowID + "/d" + strconv.Itoa(k), metrics: f.names, birthMetrics: f.names})
	}
}

// nodeBirthNames are the metrics of an NBIRTH: bdSeq, the rebirth control
// and the node's own.
func nodeBirthNames(names []string) []string {
	return append([]string{spBdSeq, spRebirth}, names...)
}

// sparkplugOptions sets an edge node's MQTT will (its NDEATH, with bdSeq)
// and, on every connection, its subscription to its NCMD topic.
func (f *fleet) sparkplugOptions(d *device, opts *mqtt.ClientOptions) {
	e := d.edge
	death := appendSparkplug(nil, uint64(time.Now().UnixMilli()), 0, false,
		[]spMetric{{name: spBdSeq, alias: 1, datatype: spbwire.Int64, vtype: spbwire.Int64, value: float64(e.bdSeq)}})
	opts.SetBinaryWill(e.topic("NDEATH", ""), death, 1, false)
	opts.SetOnConnectHandler(func(cl mqtt.Client) {
		cl.Subscribe(e.topic("NCMD", ""), 0, func(_ mqtt.Client, m mqtt.Message) {
			if isRebirthRequest(m.Payload()) {
				e.asked.Add(1)
				f.c.rebirthsAsked.Add(1)
				select {
				case e.rebirth <- struct{}{}:
				default: // one is pending already
				}
			}
		})
	})
}

// runEdgeNode is a device of the shape sparkplug: NBIRTH and DBIRTHs, then
// a DATA message a unit (NDATA and the devices' DDATA in turn), by alias
// only, seq 0..255 wrapping; a Rebirth request is answered with NBIRTH and
// DBIRTHs before the next message; at the end an NDEATH. Each BIRTH and
// DATA message is a unit of the ledger of its node or device, landing a
// row per metric.
func (f *fleet) runEdgeNode(ctx, sendCtx context.Context, d *device) {
	e, md := d.edge, f.mqtt[d.idx]
	timer := stoppedTimer()
	defer timer.Stop()
	started := false
	for j := int64(0); ; j++ {
		due, ok := f.nextDue(sendCtx, d, j, timer)
		if !ok {
			break
		}
		if !started {
			f.births(ctx, d, md, due)
			started = true
		}
		select {
		case <-e.rebirth:
			f.births(ctx, d, md, time.Now())
			f.c.rebirthsAnswered.Add(1)
		default:
		}
		d.step()
		target := int(j % int64(len(d.subs)+1))
		f.sparkplugData(ctx, d, md, target, due)
	}
	if !started {
		return
	}
	if e.forced > 0 && e.asked.Load() == 0 {
		// The request for the rebirth this node forced may still be on its
		// way: the run is to show it answered.
		timer.Reset(spRebirthWait)
		select {
		case <-e.rebirth:
			f.births(ctx, d, md, time.Now())
			f.c.rebirthsAnswered.Add(1)
		case <-timer.C:
		case <-ctx.Done():
		}
		stopTimer(timer)
	}
	death := appendSparkplug(nil, uint64(d.deviceMs(time.Now())), 0, false,
		[]spMetric{{name: spBdSeq, alias: 1, datatype: spbwire.Int64, vtype: spbwire.Int64, value: float64(e.bdSeq)}})
	switch acked := f.publishOnce(context.WithoutCancel(ctx), md, e.topic("NDEATH", ""), death); {
	case acked && f.cfg.QoS > 0:
		f.c.deathsAcked.Add(1)
	default: // at QoS 0 written is not stored
		f.c.deathsUnacked.Add(1)
	}
}

// births publishes the node's NBIRTH (seq 0: a birth restarts the
// sequence) and its devices' DBIRTHs, every metric with its name, alias and
// datatype.
func (f *fleet) births(ctx context.Context, d *device, md *mqttDevice, due time.Time) {
	e := d.edge
	e.seq = 0
	k := f.cfg.MetricCount
	ms := d.deviceMs(due)
	seq := e.nextSeq()
	unit := d.add(ms, flagBirth)
	metrics := []spMetric{
		{name: spBdSeq, alias: 1, datatype: spbwire.Int64, vtype: spbwire.Int64, value: float64(e.bdSeq)},
		{name: spRebirth, alias: 2, datatype: spbwire.Boolean, vtype: spbwire.Boolean},
	}
	metrics = append(metrics, spMetrics(0, d.value, seq, k, true)...)
	f.sparkplugPublish(ctx, d, md, &d.ledger, e.topic("NBIRTH", ""), unit, due,
		func(b []byte) []byte { return appendSparkplug(b, uint64(ms), seq, true, metrics) })
	for i, sub := range d.subs {
		ms := d.deviceMs(due)
		seq := e.nextSeq()
		unit := sub.add(ms, flagBirth)
		metrics := spMetrics(i+1, d.value, seq, k, true)
		f.sparkplugPublish(ctx, d, md, sub, e.topic("DBIRTH", "d"+strconv.Itoa(i+1)), unit, due,
			func(b []byte) []byte { return appendSparkplug(b, uint64(ms), seq, true, metrics) })
	}
}

// sparkplugData publishes one NDATA (target 0) or DDATA of device target:
// the metrics by alias alone. Every Config.SparkplugRebirthEvery-th NDATA
// carries one alias more, which no birth gave: at QoS 1/2 the target stores
// that message whole as an edge dead letter and lands none of its rows
// (its unit is marked flagDeadLetter), at QoS 0 its known metrics land.
func (f *fleet) sparkplugData(ctx context.Context, d *device, md *mqttDevice, target int, due time.Time) {
	e := d.edge
	led, topic := &d.ledger, e.topic("NDATA", "")
	if target > 0 {
		led, topic = d.subs[target-1], e.topic("DDATA", "d"+strconv.Itoa(target))
	}
	ms := d.deviceMs(due)
	seq := e.nextSeq()
	metrics := spMetrics(target, d.value, seq, f.cfg.MetricCount, false)
	var flags uint8
	if target == 0 {
		e.ndata++
		if n := f.cfg.SparkplugRebirthEvery; n > 0 && e.ndata%n == 0 {
			metrics = append(metrics, spMetric{alias: spBogusAlias, value: d.value, vtype: spbwire.Double})
			e.forced++
			f.c.rebirthsForced.Add(1)
			if f.cfg.QoS > 0 {
				// Stored whole as an edge dead letter, no row; at QoS 0
				// what resolves (the known metrics) lands.
				flags = flagDeadLetter
			}
		}
	}
	unit := led.add(ms, flags)
	f.sparkplugPublish(ctx, d, md, led, topic, unit, due,
		func(b []byte) []byte { return appendSparkplug(b, uint64(ms), seq, true, metrics) })
}

// sparkplugPublish publishes one unit's message and, drawn by
// Config.Resend, its identical copy after the acknowledgement.
func (f *fleet) sparkplugPublish(ctx context.Context, d *device, md *mqttDevice, led *ledger, topic string, unit uint64,
	due time.Time, build func([]byte) []byte) {
	acked, payload := f.publishUnits(ctx, d, md, led, topic, unit, 1, 64+24*f.cfg.MetricCount, build, due)
	if acked && f.resendNow(d) {
		f.resendMQTT(ctx, md, led, topic, unit, 1, payload)
	}
}

// spMetrics are the k metrics of a node (device 0) or device: in a birth
// with name and datatype, in DATA by alias alone.
func spMetrics(device int, v float64, seq uint64, k int, birth bool) []spMetric {
	out := make([]spMetric, k)
	for i := range out {
		dt := spDatatypes[i%len(spDatatypes)]
		out[i] = spMetric{alias: spAlias(device, i), vtype: dt, value: spValue(dt, v, i, seq)}
		if birth {
			out[i].name, out[i].datatype = metricName(i), dt
		}
	}
	return out
}

// publishOnce publishes payload on topic at the run's QoS and reports
// whether it was acknowledged within Timeout (at QoS 0: written).
func (f *fleet) publishOnce(ctx context.Context, md *mqttDevice, topic string, payload []byte) bool {
	tok := md.client.Publish(topic, byte(f.cfg.QoS), false, payload)
	f.c.requests.Add(1)
	md.timer.Reset(f.cfg.Timeout)
	defer stopTimer(md.timer)
	select {
	case <-tok.Done():
		return tok.Error() == nil
	case <-md.timer.C:
	case <-ctx.Done():
	}
	return false
}

// isRebirthRequest reports whether an NCMD payload sets Node
// Control/Rebirth to true: a Payload with a Metric of that name and
// boolean_value true.
func isRebirthRequest(p []byte) bool {
	found := false
	walkProto(p, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) {
		if num != spbwire.PayloadMetrics || typ != protowire.BytesType {
			return
		}
		var name string
		var set bool
		walkProto(b, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) {
			switch {
			case num == spbwire.MetricName && typ == protowire.BytesType:
				name = string(b)
			case num == spbwire.MetricBooleanValue && typ == protowire.VarintType:
				set = v != 0
			}
		})
		found = found || (name == spRebirth && set)
	})
	return found
}

// walkProto calls fn with each field of the protobuf message b (a varint's
// or fixed field's value in v, a length-delimited one's bytes in b); it
// stops at the first malformed field.
func walkProto(p []byte, fn func(num protowire.Number, typ protowire.Type, v uint64, b []byte)) {
	for len(p) > 0 {
		num, typ, n := protowire.ConsumeTag(p)
		if n < 0 {
			return
		}
		p = p[n:]
		var (
			v uint64
			b []byte
		)
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(p)
		case protowire.Fixed32Type:
			var x uint32
			x, n = protowire.ConsumeFixed32(p)
			v = uint64(x)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(p)
		case protowire.BytesType:
			b, n = protowire.ConsumeBytes(p)
		default:
			n = protowire.ConsumeFieldValue(num, typ, p)
		}
		if n < 0 {
			return
		}
		p = p[n:]
		fn(num, typ, v, b)
	}
}
