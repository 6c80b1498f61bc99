package simulator

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Shapes of what a device sends (Config.Shape).
const (
	ShapeReading   = "reading"   // one reading a message: the readings topic, /v1/readings, /readings/fast
	ShapeTelemetry = "telemetry" // multi-metric JSON under a topic hierarchy (rule sim-telemetry*)
	ShapeSamples   = "samples"   // an upload of buffered samples (rule sim-samples*)
	ShapeSparkplug = "sparkplug" // Sparkplug B edge nodes (no rule)
	ShapeTyped     = "typed"     // the telemetry message, a row of the typed table sim_telemetry (rule sim-typed*)
)

// The rules of deploy/simulate-rules.yaml the shapes send to: HTTP requests
// name theirs (?rule=), MQTT topics match theirs.
const (
	RuleTelemetry = "sim-telemetry"
	RuleSamples   = "sim-samples"
	RuleTyped     = "sim-typed"
)

// TypedTable is the table the rules of the shape typed route to.
const TypedTable = "sim_telemetry"

// Bounds of the shapes' options.
const (
	maxMetrics          = 32
	maxSparkplugDevices = 100
)

// validateShape checks the options of Config.Shape.
func (c *Config) validateShape() error {
	switch c.Shape {
	case ShapeReading, ShapeTelemetry, ShapeSamples, ShapeSparkplug, ShapeTyped:
	default:
		return fmt.Errorf("--shape %q: want reading, telemetry, samples, sparkplug or typed", c.Shape)
	}
	if c.MetricCount < 1 || c.MetricCount > maxMetrics {
		return fmt.Errorf("--metric-count %d: want 1 to %d", c.MetricCount, maxMetrics)
	}
	if c.SparkplugDevices < 0 || c.SparkplugDevices > maxSparkplugDevices {
		return fmt.Errorf("--sparkplug-devices %d: want 0 to %d", c.SparkplugDevices, maxSparkplugDevices)
	}
	if c.SparkplugRebirthEvery < 0 {
		return fmt.Errorf("--sparkplug-rebirth-every %d: want 0 (never) or more", c.SparkplugRebirthEvery)
	}
	if c.Resend < 0 || c.Resend > 1 {
		return fmt.Errorf("--resend %g: want a probability from 0 to 1", c.Resend)
	}
	if c.Shape == ShapeSparkplug && c.Protocol != ProtocolMQTT {
		return fmt.Errorf("--shape sparkplug: edge nodes speak MQTT: use --protocol mqtt")
	}
	if c.Shape == ShapeSparkplug && c.Batch != 1 {
		return fmt.Errorf("--batch %d: --shape sparkplug sends one message at a time (--batch is for samples, reading, and telemetry or typed over HTTP)", c.Batch)
	}
	if c.isTelemetry() && c.Batch != 1 && c.Protocol != ProtocolHTTP {
		return fmt.Errorf("--batch %d: --shape %s batches only over HTTP (NDJSON, a message a line): use --protocol http, or publish one message at a time", c.Batch, c.Shape)
	}
	if (c.isTelemetry() || c.Shape == ShapeSamples) && c.usesHTTP() && c.Endpoint != EndpointV1 {
		return fmt.Errorf("--shape %s posts to /v1/readings?rule=...: use --endpoint v1", c.Shape)
	}
	if c.Shape != ShapeReading && c.ExtraFields > 0 {
		return fmt.Errorf("--extra-fields: only with --shape reading")
	}
	return nil
}

// isTelemetry says the devices send the telemetry message (the shapes
// telemetry and typed).
func (c *Config) isTelemetry() bool { return c.Shape == ShapeTelemetry || c.Shape == ShapeTyped }

// metricName is the name of metric i of a telemetry message or a Sparkplug
// node or device.
func metricName(i int) string {
	switch i {
	case 0:
		return "temp"
	case 1:
		return "pressure"
	case 2:
		return "rpm"
	}
	return "m" + strconv.Itoa(i)
}

// metricNames are the first k metric names.
func metricNames(k int) []string {
	out := make([]string, k)
	for i := range out {
		out[i] = metricName(i)
	}
	return out
}

// messageID is the id every message of the new shapes carries, so that a
// target can tell a resend from a new message: <device id>-<seq>.
func messageID(b []byte, deviceID string, seq uint64) []byte {
	b = append(b, deviceID...)
	b = append(b, '-')
	return strconv.AppendUint(b, seq, 10)
}

// setMessageID sets the Idempotency-Key header of a device's next request
// (the device owns h and sends one request at a time).
func setMessageID(h http.Header, deviceID string, seq uint64) {
	h["Idempotency-Key"] = []string{string(messageID(nil, deviceID, seq))}
}

// shapeTarget prepares device d of the shapes telemetry, typed and samples: the
// context of its requests, and its MQTT connection and topic or its HTTP
// headers.
func (f *fleet) shapeTarget(ctx context.Context, d *device, topic string) (*mqttDevice, string, http.Header) {
	d.reqCtx = context.WithoutCancel(ctx)
	if d.mqtt {
		return f.mqtt[d.idx], topic, nil
	}
	return nil, "", f.http.headers(d, f.cfg.APIKey)
}

// deviceMs is a device's clock for the new shapes: Unix milliseconds,
// strictly increasing per device, so that (device, metric, ts) names one
// row; it runs ahead of the wall clock only while a device sends more than
// a message (or sample) a millisecond.
func (d *device) deviceMs(at time.Time) int64 {
	ms := at.Add(d.clock).UnixMilli()
	if ms <= d.lastMs {
		ms = d.lastMs + 1
	}
	d.lastMs = ms
	return ms
}

// rowScope is where the run's rows are: device ids sim-<run>-<n>, or for
// the shape sparkplug sim-<run>/<edge node>[/<device>] ('0' is the byte
// after '/'); for the shape typed in the table TypedTable, not readings.
func (c *Config) rowScope() scope {
	if c.Shape == ShapeSparkplug {
		g := c.sparkplugGroup()
		return scope{lo: g + "/", hi: g + "0"}
	}
	sc := newScope(c.DevicePrefix())
	if c.Shape == ShapeTyped {
		sc.typed = TypedTable
	}
	return sc
}
