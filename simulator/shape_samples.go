package simulator

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"
)

// samplesMetric is the one metric of a sample (rule sim-samples: metrics [v]).
const samplesMetric = "v"

// runSamples is a device of the shape samples: it buffers a sample a unit
// and uploads Config.Batch of them in one message, {"device": "<id>",
// "msg_id": "<id>-<first seq>", "samples": [{"ts": "<RFC 3339>", "v": ..,
// "seq": n}, ...]}, posted to /v1/readings?rule=sim-samples or published to
// sim/<id>/samples (rule sim-samples-mqtt). A sample is a unit of the
// ledger, landing one row (metric v). As with /v1/readings batches, a
// device's first upload is shorter (1 to Batch samples, by its index), so
// that the fleet's uploads spread over time.
func (f *fleet) runSamples(ctx, sendCtx context.Context, d *device) {
	batch := f.cfg.Batch
	md, topic, h := f.shapeTarget(ctx, d, "sim/"+d.id+"/samples")
	send := func(first uint64, n int, due time.Time) {
		d.buf = append(d.buf, ']', '}')
		if d.mqtt {
			body := d.buf
			acked, payload := f.publishUnits(ctx, d, md, &d.ledger, topic, first, n, len(body),
				func(b []byte) []byte { return append(b, body...) }, due)
			if acked && f.resendNow(d) {
				f.resendMQTT(ctx, md, &d.ledger, topic, first, n, payload)
			}
			return
		}
		setMessageID(h, d.id, first)
		f.sendHTTP(ctx, d, h, d.buf, first, n, due)
		if d.flags[first-1]&flagAcked != 0 && f.resendNow(d) {
			f.resendHTTP(ctx, d, h, d.buf, first, n)
		}
	}
	timer := stoppedTimer()
	defer timer.Stop()
	var (
		inBatch int
		first   uint64
		due     time.Time
	)
	for j := int64(0); ; j++ {
		var ok bool
		if due, ok = f.nextDue(sendCtx, d, j, timer); !ok {
			break
		}
		d.step()
		ms := d.deviceMs(due)
		seq := d.add(ms, 0)
		if inBatch == 0 {
			first = seq
			d.buf = append(d.buf[:0], `{"device":"`...)
			d.buf = append(d.buf, d.id...)
			d.buf = append(d.buf, `","msg_id":"`...)
			d.buf = messageID(d.buf, d.id, seq)
			d.buf = append(d.buf, `","samples":[`...)
		} else {
			d.buf = append(d.buf, ',')
		}
		d.buf = appendSample(d.buf, ms, d.value, seq)
		if inBatch++; inBatch == batch || (j < int64(batch) && j == int64(d.idx%batch)) {
			send(first, inBatch, due)
			inBatch = 0
		}
	}
	if inBatch > 0 {
		if sendCtx.Err() != nil && !errors.Is(context.Cause(sendCtx), context.DeadlineExceeded) {
			// Interrupted or aborted before the upload was full: never
			// sent, out of the ledger.
			d.flags, d.ts = d.flags[:first-1], d.ts[:first-1]
			return
		}
		send(first, inBatch, due)
	}
}

// appendSample appends one sample of an upload.
func appendSample(b []byte, ms int64, v float64, seq uint64) []byte {
	b = append(b, `{"ts":"`...)
	b = timeAppend(b, ms)
	b = append(b, `","v":`...)
	b = strconv.AppendFloat(b, math.Round(v*1000)/1000, 'f', -1, 64)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, '}')
}
