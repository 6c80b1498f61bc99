package simulator

import (
	"context"
	"math"
	"strconv"
	"time"
)

// telemetryTopic is device d's topic in the hierarchy of the shape
// telemetry (kind "telemetry") or typed (kind "typed"):
// sim/<site>/<line>/<device id>/<kind>, ten devices a line and ten lines a
// site (see deviceSite).
func telemetryTopic(d *device, kind string) string {
	site, line := deviceSite(d.idx)
	return "sim/" + site + "/" + line + "/" + d.id + "/" + kind
}

// deviceSite is where device index i stands in the topic hierarchy: site
// i/100+1, line (i/10)%10+1, as site<s> and line<l>.
func deviceSite(i int) (site, line string) {
	return "site" + strconv.Itoa(i/100+1), "line" + strconv.Itoa(i/10%10+1)
}

// runTelemetry is a device of the shapes telemetry and typed: each message
// is one multi-metric JSON object, {"t": <unix ms>, "temp": .., "pressure":
// .., "rpm": .., "seq": n, "msg_id": "<id>-<n>"} with Config.MetricCount
// metrics, published to its topic (rule sim-telemetry-mqtt, or
// sim-typed-mqtt) or, with "device", posted to
// /v1/readings?rule=sim-telemetry (sim-typed). A message is a unit of the
// ledger, landing a row per metric in readings (telemetry) or one row of
// the table sim_telemetry (typed; the ledger then keeps the value the
// device measured, for the column check).
func (f *fleet) runTelemetry(ctx, sendCtx context.Context, d *device) {
	k := f.cfg.MetricCount
	typed := f.cfg.Shape == ShapeTyped
	kind := "telemetry"
	if typed {
		kind = "typed"
	}
	md, topic, h := f.shapeTarget(ctx, d, telemetryTopic(d, kind))
	batch := max(1, f.cfg.Batch) // HTTP only (Config.validateShape)
	if batch > 1 {
		h["Content-Type"] = []string{"application/x-ndjson"}
	}
	var (
		inBatch int
		first   uint64
		firstAt time.Time
	)
	timer := stoppedTimer()
	defer timer.Stop()
	for j := int64(0); ; j++ {
		due, ok := f.nextDue(sendCtx, d, j, timer)
		if !ok {
			if inBatch > 0 { // what the run's end cut short goes as it is
				f.sendHTTP(ctx, d, h, d.buf, first, inBatch, firstAt)
			}
			return
		}
		d.step()
		ms := d.deviceMs(due)
		seq := d.add(ms, 0)
		if typed {
			d.values = append(d.values, d.value)
		}
		if d.mqtt {
			value := d.value
			acked, payload := f.publishUnits(ctx, d, md, &d.ledger, topic, seq, 1, 96+24*k,
				func(b []byte) []byte { return appendTelemetry(b, "", d.id, seq, ms, value, k) }, due)
			if acked && f.resendNow(d) {
				f.resendMQTT(ctx, md, &d.ledger, topic, seq, 1, payload)
			}
			continue
		}
		if batch > 1 {
			// NDJSON, a message a line; each names itself by its msg_id,
			// so the request has no Idempotency-Key.
			if inBatch == 0 {
				d.buf, first, firstAt = d.buf[:0], seq, due
			}
			d.buf = append(appendTelemetry(d.buf, d.id, d.id, seq, ms, d.value, k), '\n')
			if inBatch++; inBatch < batch {
				continue
			}
			f.sendHTTP(ctx, d, h, d.buf, first, inBatch, firstAt)
			if d.flags[first-1]&flagAcked != 0 && f.resendNow(d) {
				f.resendHTTP(ctx, d, h, d.buf, first, inBatch)
			}
			inBatch = 0
			continue
		}
		d.buf = appendTelemetry(d.buf[:0], d.id, d.id, seq, ms, d.value, k)
		setMessageID(h, d.id, seq)
		f.sendHTTP(ctx, d, h, d.buf, seq, 1, due)
		if d.flags[seq-1]&flagAcked != 0 && f.resendNow(d) {
			f.resendHTTP(ctx, d, h, d.buf, seq, 1)
		}
	}
}

// appendTelemetry appends a telemetry message: with device (HTTP) its
// "device" first, then "t" (Unix ms), k metrics, "seq" and "msg_id". Metric
// i of value v is telemetryValue(i, v, seq), rounded to 3 decimals.
func appendTelemetry(b []byte, device, id string, seq uint64, ms int64, v float64, k int) []byte {
	b = append(b, '{')
	if device != "" {
		b = append(b, `"device":"`...)
		b = append(b, device...) // sim-<run>-<n>: nothing to escape
		b = append(b, `",`...)
	}
	b = append(b, `"t":`...)
	b = strconv.AppendInt(b, ms, 10)
	for i := range k {
		b = append(b, ',', '"')
		b = append(b, metricName(i)...)
		b = append(b, '"', ':')
		b = strconv.AppendFloat(b, telemetryValue(i, v, seq), 'f', -1, 64)
	}
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"msg_id":"`...)
	b = messageID(b, id, seq)
	return append(b, '"', '}')
}

// telemetryValue is metric i of a telemetry message whose device measured
// v, as the message carries it (rounded to 3 decimals): temp v, pressure (in
// bar) 3 + (v-20)*0.05, rpm 1200 + seq%50, m<i> v+i.
func telemetryValue(i int, v float64, seq uint64) float64 {
	var x float64
	switch i {
	case 0:
		x = v
	case 1: // bar
		x = 3 + (v-20)*0.05
	case 2:
		x = float64(1200 + seq%50)
	default:
		x = v + float64(i)
	}
	return math.Round(x*1000) / 1000
}

// timeAppend appends ms as an RFC 3339 time of millisecond precision.
func timeAppend(b []byte, ms int64) []byte {
	return time.UnixMilli(ms).UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
}
