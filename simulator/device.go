package simulator

import (
	"context"
	"math"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"
)

// Per-reading flags of the ledger: what the device did with reading seq and
// what came back. One byte a reading: a run of a million readings costs 1 MB.
const (
	flagSent            uint8 = 1 << iota // at least one attempt was made
	flagAcked                             // a 200 answer, PUBACK or PUBCOMP came back
	flagResent                            // sent more than once, or may have been (resent by the MQTT client)
	flagQoS0                              // published at QoS 0: at most once, never acknowledged
	flagResentOnPurpose                   // sent once more after its acknowledgement (Config.Resend)
	flagBirth                             // a Sparkplug BIRTH: its rows are the birth's metrics
	// flagDeadLetter: a Sparkplug DATA with an alias no birth gave, sent
	// at QoS 1/2: the target stores it whole as an edge dead letter
	// (readings_rejected, source 'edge') and lands none of its rows.
	flagDeadLetter
)

// ledger is the record of one device of the rows (its device_id): an entry
// a unit (a reading; in the new shapes a message, or a sample), and for the
// new shapes the device time of each unit and the metrics each lands, so
// that the verification can look for every (device, metric, ts).
type ledger struct {
	rowID string // the device_id of its rows
	// flags[seq-1] is the entry of unit seq.
	flags []uint8
	// ts[seq-1] is unit seq's device time, Unix ms, strictly increasing
	// (new shapes only).
	ts []int64
	// metrics are the rows of a unit; birthMetrics those of a unit with
	// flagBirth (Sparkplug).
	metrics, birthMetrics []string
	// values[seq-1] is the value the device measured for unit seq, from
	// which its message's fields derive (shape typed only: the column
	// check compares every column of its row with them).
	values []float64
}

// add records a new unit of the new shapes, measured at ms, and returns its
// sequence number.
func (l *ledger) add(ms int64, f uint8) uint64 {
	l.flags = append(l.flags, f)
	l.ts = append(l.ts, ms)
	return uint64(len(l.flags))
}

// mark sets flag f on the units first..first+n-1.
func (l *ledger) mark(first uint64, n int, f uint8) {
	for i := range n {
		l.flags[first-1+uint64(i)] |= f
	}
}

// device is one fake device: its identity, its sensor and its ledger. A device
// is used by one goroutine at a time (its own while the fleet runs, the
// verifier's after), so its fields need no locks; epoch is written by the
// MQTT client's callbacks.
type device struct {
	idx  int    // 0-based position in the fleet
	id   string // sim-<run>-<idx+1>
	mqtt bool   // speaks MQTT (else HTTP)

	rng     *rand.Rand
	base    float64 // the value the sensor drifts around
	value   float64
	battery float64       // percent
	clock   time.Duration // added to the time of each measurement (Config.ClockSpread)

	// ledger is the device's record of what it sent; in the shape
	// sparkplug the edge node's, and subs those of its devices.
	ledger
	subs   []*ledger
	edge   *edgeNode // the shape sparkplug's state
	lastMs int64     // the last deviceMs
	buf    []byte    // the request body or publish payload being built

	// reqCtx is the context of the device's HTTP requests: the run's,
	// without its cancellation.
	reqCtx context.Context

	// epoch counts connection losses of the device's MQTT client; a publish
	// that saw it change while in flight may have been resent.
	epoch atomic.Int64
}

func newDevice(run string, idx int, mqtt bool) *device {
	seed := uint64(idx) + 1
	for _, c := range []byte(run) {
		seed = seed*131 + uint64(c)
	}
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	base := 15 + rng.Float64()*15 // a room or a fridge, 15-30 °C
	id := "sim-" + run + "-" + strconv.Itoa(idx+1)
	return &device{
		ledger:  ledger{rowID: id},
		idx:     idx,
		id:      id,
		mqtt:    mqtt,
		rng:     rng,
		base:    base,
		value:   base + rng.NormFloat64(),
		battery: 70 + rng.Float64()*30,
		buf:     make([]byte, 0, 256),
	}
}

// reading is one measurement, ready to encode.
type reading struct {
	seq     uint64
	value   float64
	battery int
	at      time.Time // when the device measured it (its ts)
}

// next measures: the sensor drifts (a random walk pulled back towards its
// base), the battery drains and is replaced when empty, and the ledger gets
// an entry for the new sequence number.
func (d *device) next(at time.Time) reading {
	d.step()
	d.flags = append(d.flags, 0)
	return reading{seq: uint64(len(d.flags)), value: d.value, battery: int(d.battery), at: at}
}

// step moves the sensor on: a random walk pulled back towards its base,
// and a battery that drains and is replaced when empty.
func (d *device) step() {
	d.value += d.rng.NormFloat64()*0.05 + (d.base-d.value)*0.01
	d.battery -= 0.01
	if d.battery < 5 {
		d.battery = 100
	}
}

// smallint is the value as the seed's endpoint takes it: a rounded integer
// within PostgreSQL's smallint.
func smallint(v float64) int64 {
	return int64(math.Max(-32768, math.Min(32767, math.Round(v))))
}

// appendFast appends the body of a POST /readings/fast: the seed's shape, the
// sequence number as id.
func appendFast(b []byte, r reading) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, r.seq, 10)
	b = append(b, `,"reading":`...)
	b = strconv.AppendInt(b, smallint(r.value), 10)
	b = append(b, `,"timestamp":"`...)
	b = r.at.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

// appendV1 appends one reading of a /v1/readings array.
func appendV1(b []byte, deviceID string, r reading, extra int) []byte {
	b = append(b, `{"device_id":"`...)
	b = append(b, deviceID...) // sim-<run>-<n>: nothing to escape
	b = append(b, `",`...)
	return appendFields(b, r, extra)
}

// appendMQTT appends an MQTT payload: the reading without its device, which
// the topic names.
func appendMQTT(b []byte, r reading, extra int) []byte {
	b = append(b, '{')
	return appendFields(b, r, extra)
}

func appendFields(b []byte, r reading, extra int) []byte {
	b = append(b, `"reading":`...)
	b = strconv.AppendFloat(b, math.Round(r.value*1000)/1000, 'f', -1, 64)
	b = append(b, `,"ts":"`...)
	b = r.at.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, r.seq, 10)
	b = append(b, `,"battery":`...)
	b = strconv.AppendInt(b, int64(r.battery), 10)
	for i := range extra {
		b = appendExtra(b, i, r)
	}
	return append(b, '}')
}

// extraNames are the optional fields' names; past them, x<n>.
var extraNames = []string{"rssi", "temp_c", "humidity", "fw", "uptime_s", "lat", "lon"}

func appendExtra(b []byte, i int, r reading) []byte {
	b = append(b, ',', '"')
	if i < len(extraNames) {
		b = append(b, extraNames[i]...)
	} else {
		b = append(b, 'x')
		b = strconv.AppendInt(b, int64(i+1), 10)
	}
	b = append(b, '"', ':')
	switch i {
	case 0: // rssi, dBm
		return strconv.AppendInt(b, -50-int64(r.seq%40), 10)
	case 1: // a second temperature
		return strconv.AppendFloat(b, math.Round(r.value*10)/10+0.5, 'f', -1, 64)
	case 2: // relative humidity, %
		return strconv.AppendInt(b, 40+int64(r.seq%20), 10)
	case 3:
		return append(b, `"1.4.2"`...)
	case 4: // seconds since boot, a reading every ~10 s
		return strconv.AppendUint(b, r.seq*10, 10)
	case 5:
		return append(b, "48.8566"...)
	case 6:
		return append(b, "2.3522"...)
	}
	return strconv.AppendUint(b, r.seq*uint64(i), 10)
}
