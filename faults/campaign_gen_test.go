package faults

// The campaign's generator: from one seed, every operation of a run (which
// client sends what, over which path, with which values) and the fault
// schedule, both counted in operations ("before op 1,200: SIGKILL the
// bridge; before op 1,230: start it again"). Nothing here does I/O and
// nothing reads a clock but the run's base time, so one seed always gives
// the same plan (campaign_test.go runs it, campaign_check_test.go judges it).

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Workload classes. Each can be switched on or off (FIREHOSE_CAMPAIGN_CLASSES);
// agelimit to retention reproduce the holes of issue 16 and fail on code
// without their fixes.
const (
	clsReadings   = "readings"   // MQTT 3.1.1 and 5 at QoS 0/1/2 on devices/ID/readings
	clsHTTP       = "http"       // /readings/fast, /v1/readings single, array and NDJSON
	clsMapped     = "mapped"     // a rule-mapped topic with multi-metric JSON
	clsSparkplug  = "sparkplug"  // Sparkplug B births, data, clean deaths, reconnects, rebirths
	clsResend     = "resend"     // a previous operation sent again, byte for byte
	clsAgeLimit   = "agelimit"   // readings just inside and just outside --max-reading-age
	clsAuth       = "auth"       // under --mqtt-auth: devices publish to other devices' readings and commands (hole 3), edge nodes outside their node and group, devices as the host's STATE (hole 4)
	clsSpbWill    = "spbwill"    // Sparkplug reconnect taking over its old connection: the will races the new birth (hole 1)
	clsSpbEarly   = "spbearly"   // Sparkplug NDATA before its birth, and of a born node with an unknown alias (hole 6)
	clsDedupMerge = "dedupmerge" // different series sharing a msg_id or a time under --dedup (hole 2)
	clsRetention  = "retention"  // readings on both sides of the retention's age bound, over HTTP and MQTT 3.1.1 and 5 (hole 8)
	clsSubscribed = "subscribed" // MQTT 3.1.1 and 5 at QoS 1/2 to an upstream Mosquitto that the subscriber role reads (issue 18)
	clsTyped      = "typed"      // rows of the typed table ctyped (issue 19): MQTT 3.1.1 and 5 at QoS 1/2, /v1/readings?rule= single and NDJSON, some breaking a column's type
	clsIdentity   = "identity"   // device identity (issue 20), at an edge of its own: client certificates over MQTT TLS and HTTPS, registry secrets over MQTT and HTTPS, devices writing as another
)

// campaignAllClasses lists every class; campaignDefaultClasses the mix of
// the short form and of `make campaign`: every class, now that issue 16's
// fixes are in (on the code before them, the five hole classes and
// Sparkplug under faults break the invariants: RELIABILITY.md, "hole
// classes on the old code").
var (
	campaignAllClasses     = []string{clsReadings, clsHTTP, clsMapped, clsSparkplug, clsResend, clsAgeLimit, clsAuth, clsSpbWill, clsSpbEarly, clsDedupMerge, clsRetention, clsSubscribed, clsTyped, clsIdentity}
	campaignDefaultClasses = campaignAllClasses
)

// Fault kinds.
const (
	fEdgeKill     = "edge-kill"           // SIGKILL the edge (broker, httpgw), start it again
	fEdgeStop     = "edge-stop"           // SIGSTOP the edge, SIGCONT
	fBridgeKill   = "bridge-kill"         // SIGKILL the bridge, start it again
	fBridgeStop   = "bridge-stop"         // SIGSTOP the bridge, SIGCONT
	fRedisKill    = "redis-kill"          // SIGKILL Redis (AOF, appendfsync always), start it again
	fRedisRestore = "redis-restore"       // SAVE, later SIGKILL Redis (no AOF) and start it from that snapshot
	fPGStop       = "pg-stop"             // stop PostgreSQL (immediate), start it again
	fFreezeEdgeR  = "freeze-edge-redis"   // freeze the edge -> Redis path, thaw it
	fFreezeBrR    = "freeze-bridge-redis" // freeze the bridge -> Redis path, thaw it
	fFreezeBrPG   = "freeze-bridge-pg"    // freeze the bridge -> PostgreSQL path, thaw it
	fClusterFail  = "cluster-failover"    // long form: SIGKILL a Redis Cluster primary, start it again once its replica took over
	fSubKill      = "subscriber-kill"     // SIGKILL the subscriber, start it again with its client id
	fSubStop      = "subscriber-stop"     // SIGSTOP the subscriber, SIGCONT
	fMosqRestart  = "mosquitto-restart"   // SIGTERM the upstream Mosquitto (it saves its persistence file), start it again
)

// campaignFaultKinds are the kinds a schedule draws from (Redis kinds by the
// seed's persistence, the subscriber's and Mosquitto's with the subscribed
// class).
var campaignFaultKinds = []string{fEdgeKill, fEdgeStop, fBridgeKill, fBridgeStop, fRedisKill, fRedisRestore, fPGStop, fFreezeEdgeR, fFreezeBrR, fFreezeBrPG, fClusterFail,
	fSubKill, fSubStop, fMosqRestart}

// cPlan is what a seed fixes: the settings of the stack, the operations and
// the faults.
type cPlan struct {
	Seed      uint64        `json:"seed"`
	Base      time.Time     `json:"base"`    // measured times are relative to it
	Persist   string        `json:"persist"` // "aof" (appendfsync always), "rdb" (snapshots only) or "cluster"
	Dedup     string        `json:"dedup"`   // off, id, natural
	Auth      bool          `json:"auth"`    // --mqtt-auth
	Retention bool          `json:"retention"`
	MaxAge    time.Duration `json:"max_reading_age"`   // --max-reading-age of the edge
	SubQoS    int           `json:"sub_qos,omitempty"` // the subscriber's --subscribe-qos (1, 2); 0: no subscribed class, no Mosquitto
	Classes   []string      `json:"classes"`
	Ops       []*cOp        `json:"-"`
	Faults    []cFault      `json:"faults"`
}

// cFault is one fault: applied before op At, healed before op At+Len (a
// restore: SAVE before At, SIGKILL before At+Len/2, start from the snapshot
// before At+Len).
type cFault struct {
	At   int    `json:"at"`
	Len  int    `json:"len"`
	Kind string `json:"kind"`
}

// cOp is one operation: what a client sends and the rows it would land.
type cOp struct {
	ID       int               `json:"id"`
	Class    string            `json:"class"`
	Kind     string            `json:"kind"`            // mqtt, fast, v1, v1-array, v1-ndjson, mapped, spb-data, spb-death, spb-takeover, spb-early, auth-cmd, auth-reading, subscribed, typed, typed-http, ident-mqtt, ident-http, ident-probe, ident-probe-http
	Client   string            `json:"client"`          // the device (or edge node) whose connection sends it
	Proto    int               `json:"proto,omitempty"` // MQTT 3 (3.1.1) or 5
	QoS      byte              `json:"qos,omitempty"`
	Topic    string            `json:"topic,omitempty"`
	Path     string            `json:"path,omitempty"` // HTTP path and query
	Header   map[string]string `json:"header,omitempty"`
	Body     string            `json:"body,omitempty"`   // JSON bodies and payloads
	Topic2   string            `json:"topic2,omitempty"` // twins: the second message, sent right after the first
	Body2    string            `json:"body2,omitempty"`
	Values   []float64         `json:"values,omitempty"` // Sparkplug metric values (the executor encodes)
	Rows     []cRow            `json:"rows,omitempty"`
	ResendOf int               `json:"resend_of,omitempty"` // 1 + the original's id
	Refuse   bool              `json:"must_refuse,omitempty"`
	Target   string            `json:"target,omitempty"` // auth probes: the device attacked
	// Reconnect: an identity device logs in again before it publishes
	// (closes its connection to the identity edge, connects anew).
	Reconnect bool `json:"reconnect,omitempty"`
}

// cRow is a row an op lands if stored: its identity (device, metric and the
// tag it carries: payload cid, the fast endpoint's id, or for Sparkplug the
// value), the value and measured time sent. A row of a typed table (Table
// set) is identified by its device and msg_id (Tag; no metric), its
// columns are v (Value), time (TS), seq (Seq) and the cid kept in extra
// (the Tag again).
type cRow struct {
	Table     string    `json:"table,omitempty"` // a typed table's name; "" for readings
	Device    string    `json:"device"`
	Metric    string    `json:"metric"`
	Tag       string    `json:"tag"`
	Value     float64   `json:"value"`
	TS        time.Time `json:"ts"`
	Dedupable bool      `json:"dedupable,omitempty"` // --dedup can tell its resends (strict exactly once)
	Old       bool      `json:"old,omitempty"`       // measured near or beyond the retention's age bound
	Msg       int       `json:"msg,omitempty"`       // twins: which of the op's two messages carries it
	Seq       int64     `json:"seq,omitempty"`       // a typed row's seq column
	// Bad: the message breaks its table's column types: refused (MQTT 5
	// 0x99, HTTP 422) or, MQTT 3.1.1, acknowledged as an edge dead letter;
	// never a row.
	Bad bool `json:"bad,omitempty"`
}

func (r cRow) key() string { return cKey(r.Table, r.Device, r.Metric, r.Tag) }

// cKey identifies a row: readings' by device, metric and tag, a typed
// table's by table, device and msg_id.
func cKey(table, device, metric, tag string) string {
	k := device + "|" + metric + "|" + tag
	if table != "" {
		k = table + ":" + k
	}
	return k
}

// cSettings are the knobs of a campaign run.
type cSettings struct {
	Ops     int
	Classes []string
	Faults  []string
	Long    bool
}

// Limits the generator and the stack share.
const (
	cMaxAge    = 48 * time.Hour // --max-reading-age of the stack
	cRetention = 3 * 24 * time.Hour
	// cRetentionMaxAge is the retention class's --max-reading-age: the bound
	// the edges apply with --retention 3d and the default 1d partition
	// interval (the retention minus one interval; serve refuses an explicit
	// --max-reading-age beyond it).
	cRetentionMaxAge = cRetention - 24*time.Hour
	cDevices         = 12
	// cEdgeNodes are the Sparkplug edge nodes that birth (e0..); cEarlyNodes
	// those that never do (x1..): each its own credential, well within
	// --sparkplug-max-nodes (16 a credential).
	cEdgeNodes  = 4
	cEarlyNodes = 4
)

// cGen holds the generator's state while it draws a plan.
type cGen struct {
	r      *rand.Rand
	p      *cPlan
	dedup  string
	spbGen map[string]int // edge node -> generation (a takeover or early node starts a new one)
}

// generate draws the plan of seed.
func generate(seed uint64, base time.Time, s cSettings) *cPlan {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := &cPlan{Seed: seed, Base: base.UTC().Truncate(time.Millisecond), Classes: s.Classes}
	has := func(c string) bool { return slices.Contains(s.Classes, c) }
	p.Persist = []string{"aof", "aof", "rdb"}[r.IntN(3)]
	if s.Long && seed%5 == 0 {
		// Every fifth seed of the long form: a Redis Cluster (3 primaries
		// with AOF always, a replica each) and --redis-min-replicas 1.
		p.Persist = "cluster"
	}
	// Resends are judged with and without --dedup (dedupmerge only runs
	// with it), auth and retention on about half and two thirds of the seeds.
	p.Dedup = []string{"off", "id", "natural"}[r.IntN(3)]
	p.Auth = has(clsAuth) && r.IntN(2) == 0
	p.Retention = has(clsRetention) && r.IntN(3) != 0
	p.MaxAge = cMaxAge
	if p.Retention {
		p.MaxAge = cRetentionMaxAge
	}
	if has(clsSubscribed) {
		p.SubQoS = 1 + r.IntN(2)
	}
	g := &cGen{r: r, p: p, dedup: p.Dedup, spbGen: map[string]int{}}

	type weighted struct {
		class string
		w     int
	}
	var mix []weighted
	for _, w := range []weighted{{clsReadings, 30}, {clsHTTP, 25}, {clsMapped, 10}, {clsSparkplug, 20}, {clsResend, 8},
		{clsAgeLimit, 3}, {clsAuth, 4}, {clsSpbWill, 3}, {clsSpbEarly, 2}, {clsDedupMerge, 3}, {clsRetention, 2}, {clsSubscribed, 10},
		{clsTyped, 12}, {clsIdentity, 12}} {
		if !has(w.class) {
			continue
		}
		if w.class == clsAuth && !p.Auth || w.class == clsDedupMerge && p.Dedup == "off" || w.class == clsRetention && !p.Retention {
			continue
		}
		mix = append(mix, w)
	}
	total := 0
	for _, w := range mix {
		total += w.w
	}
	for id := 0; id < s.Ops; id++ {
		n := r.IntN(total)
		class := mix[len(mix)-1].class
		for _, w := range mix {
			if n < w.w {
				class = w.class
				break
			}
			n -= w.w
		}
		op := g.op(id, class)
		op.ID, op.Class = id, class
		p.Ops = append(p.Ops, op)
	}
	p.Faults = g.schedule(s)
	return p
}

func (g *cGen) device(i int) string { return fmt.Sprintf("cd%d", i) }

// ts is the measured time of op id's row k: distinct for every row of the
// run, within the last hour before base.
func (g *cGen) ts(id, k int) time.Time {
	return g.p.Base.Add(-time.Hour + time.Duration(id)*time.Millisecond*10 + time.Duration(k)*time.Millisecond)
}

func value(id, k int) float64 { return float64(id) + float64(k)/8 }

// op draws one operation of class.
func (g *cGen) op(id int, class string) *cOp {
	r := g.r
	dev := g.device(r.IntN(cDevices))
	switch class {
	case clsReadings:
		op := &cOp{Kind: "mqtt", Client: dev, Proto: []int{3, 5}[r.IntN(2)], QoS: byte(r.IntN(3)), Topic: "devices/" + dev + "/readings"}
		row := g.row(dev, "reading", id, 0, g.ts(id, 0))
		op.Body = g.reading(row, false)
		op.Rows = []cRow{row}
		return op
	case clsHTTP:
		switch r.IntN(4) {
		case 0: // the seed's endpoint: the body's id is the tag, the reading a smallint
			// Under --dedup natural its key is the device, the body's id and the
			// time; under --dedup id it has none (no Idempotency-Key header).
			row := cRow{Device: dev, Metric: "reading", Tag: strconv.Itoa(id), Value: float64(id % 30000), TS: g.ts(id, 0), Dedupable: g.dedup == "natural"}
			body := fmt.Sprintf(`{"id":%d,"reading":%d,"timestamp":%q}`, id, id%30000, row.TS.Format(time.RFC3339Nano))
			return &cOp{Kind: "fast", Client: dev, Path: "/readings/fast", Header: map[string]string{"X-Device-ID": dev}, Body: body, Rows: []cRow{row}}
		case 1:
			row := g.row(dev, "reading", id, 0, g.ts(id, 0))
			return &cOp{Kind: "v1", Client: dev, Path: "/v1/readings", Body: g.reading(row, true), Rows: []cRow{row}}
		default:
			n := 2 + r.IntN(4)
			op := &cOp{Kind: "v1-array", Client: dev, Path: "/v1/readings"}
			var parts []string
			for k := range n {
				d := g.device(r.IntN(cDevices))
				row := g.row(d, "reading", id, k, g.ts(id, k))
				op.Rows = append(op.Rows, row)
				parts = append(parts, g.reading(row, true))
			}
			if r.IntN(2) == 0 {
				op.Kind, op.Header, op.Body = "v1-ndjson", map[string]string{"Content-Type": "application/x-ndjson"}, strings.Join(parts, "\n")+"\n"
			} else {
				op.Body = "[" + strings.Join(parts, ",") + "]"
			}
			return op
		}
	case clsMapped:
		return g.mapped(id, dev, []string{"berlin", "munich"}[r.IntN(2)], g.ts(id, 0), fmt.Sprintf("o%d", id))
	case clsSparkplug:
		node := fmt.Sprintf("e%d", r.IntN(cEdgeNodes))
		if r.IntN(25) == 0 {
			return &cOp{Kind: "spb-death", Client: node}
		}
		return g.spbData(id, node, "spb-data")
	case clsSpbWill:
		node := fmt.Sprintf("e%d", r.IntN(cEdgeNodes))
		op := g.spbData(id, node, "spb-takeover")
		return op
	case clsSpbEarly:
		if r.IntN(2) == 0 {
			// A born node's NDATA with an alias no birth gave beside known
			// ones: dead-lettered whole, none of its values a row.
			op := g.spbData(id, fmt.Sprintf("e%d", r.IntN(cEdgeNodes)), "spb-data")
			g.unknownAlias(op, id)
			return op
		}
		// A node that never births (x1..x4, reused: none has state).
		g.spbGen["early"]++
		node := fmt.Sprintf("x%d", 1+g.spbGen["early"]%cEarlyNodes)
		op := g.spbData(id, node, "spb-early")
		if r.IntN(2) == 0 {
			g.unknownAlias(op, id)
		}
		return op
	case clsResend:
		for range 10 {
			if len(g.p.Ops) == 0 {
				break
			}
			orig := g.p.Ops[r.IntN(len(g.p.Ops))]
			if orig.ResendOf != 0 || orig.Refuse || !slices.Contains([]string{"mqtt", "fast", "v1", "v1-array", "v1-ndjson", "mapped", "subscribed", "typed", "typed-http", "ident-mqtt", "ident-http"}, orig.Kind) {
				continue
			}
			op := *orig
			op.ResendOf = orig.ID + 1
			if op.Kind == "mqtt" && op.QoS == 0 {
				op.QoS = 1
			}
			return &op
		}
		return g.op(id, clsReadings)
	case clsSubscribed:
		// A device of a fleet that publishes to a broker of its own
		// (Mosquitto), which firehose's subscriber reads. Delivered to the
		// subscriber at the lower of the two QoS: at 2 it bypasses --dedup
		// (docs/guarantees.md), so only a QoS 1 delivery is dedupable.
		op := &cOp{Kind: "subscribed", Client: dev, Proto: []int{3, 5}[r.IntN(2)], QoS: byte(1 + r.IntN(2)), Topic: cSubTopic(dev)}
		row := g.row(dev, "reading", id, 0, g.ts(id, 0))
		row.Dedupable = row.Dedupable && cSubDelivery(op.QoS, g.p.SubQoS) == 1
		op.Body, op.Rows = g.reading(row, false), []cRow{row}
		return op
	case clsTyped:
		return g.typed(id, dev, g.ts, false)
	case clsIdentity:
		return g.identity(id)
	case clsAgeLimit:
		// Just inside (stored) or just outside (refused 422) --max-reading-age.
		ts := g.p.Base.Add(-g.p.MaxAge + 10*time.Minute)
		if r.IntN(2) == 0 {
			ts = g.p.Base.Add(-g.p.MaxAge - 10*time.Minute)
		}
		ts = ts.Add(time.Duration(id) * time.Millisecond)
		row := g.row(dev, "reading", id, 0, ts)
		return &cOp{Kind: "v1", Client: dev, Path: "/v1/readings", Body: g.reading(row, true), Rows: []cRow{row}}
	case clsRetention:
		// Within an hour either side of the edges' bound (the retention
		// minus one interval): older ones are refused (422, MQTT 5 0x99, an
		// MQTT 3.1.1 QoS 1/2 publish acknowledged as an edge dead letter);
		// one accepted must survive the maintenance pass the check runs.
		ts := g.p.Base.Add(-cRetentionMaxAge + time.Hour - time.Duration(r.IntN(7200))*time.Second).Add(time.Duration(id) * time.Millisecond)
		if slices.Contains(g.p.Classes, clsTyped) && r.IntN(3) == 0 {
			// Rows of the typed table, whose partitions the same retention keeps.
			return g.typed(id, dev, func(_, k int) time.Time { return ts.Add(time.Duration(k) * time.Millisecond) }, true)
		}
		row := g.row(dev, "reading", id, 0, ts)
		row.Old = true
		if r.IntN(2) == 0 {
			op := &cOp{Kind: "mqtt", Client: dev, Proto: []int{3, 5}[r.IntN(2)], QoS: byte(1 + r.IntN(2)), Topic: "devices/" + dev + "/readings"}
			op.Body, op.Rows = g.reading(row, false), []cRow{row}
			return op
		}
		return &cOp{Kind: "v1", Client: dev, Path: "/v1/readings", Body: g.reading(row, true), Rows: []cRow{row}}
	case clsAuth:
		if slices.Contains(g.p.Classes, clsSparkplug) && r.IntN(2) == 0 {
			return g.spbProbe(id, dev)
		}
		target := g.device(r.IntN(cDevices))
		for target == dev {
			target = g.device(r.IntN(cDevices))
		}
		if r.IntN(2) == 0 {
			body := fmt.Sprintf(`{"from":%q,"cid":"o%d"}`, dev, id)
			return &cOp{Kind: "auth-cmd", Client: dev, Proto: 5, QoS: 1, Topic: "devices/" + target + "/commands", Body: body, Refuse: true, Target: target}
		}
		row := g.row(target, "reading", id, 0, g.ts(id, 0))
		return &cOp{Kind: "auth-reading", Client: dev, Proto: 5, QoS: 1, Topic: "devices/" + target + "/readings", Body: g.reading(row, false), Rows: []cRow{row}, Refuse: true, Target: target}
	case clsDedupMerge:
		// Two series of one device id with the same message id and time:
		// press7 of two sites (a rule captures the site), or two /readings/fast
		// clients without X-Device-ID posting one timestamp.
		if r.IntN(2) == 0 || g.p.Auth {
			ts := g.ts(id, 0)
			op := g.mapped(id, dev, "berlin", ts, fmt.Sprintf("m%d", id))
			twin := g.mapped(id, dev, "munich", ts, fmt.Sprintf("m%d", id))
			for i := range twin.Rows {
				twin.Rows[i].Tag += "-twin"
				twin.Rows[i].Msg = 1
			}
			twin.Body = strings.Replace(twin.Body, fmt.Sprintf(`"cid":"o%d"`, id), fmt.Sprintf(`"cid":"o%d-twin"`, id), 1)
			op.Kind, op.Topic2, op.Body2, op.Rows = "mapped-twins", twin.Topic, twin.Body, append(op.Rows, twin.Rows...)
			return op
		}
		ts := g.ts(id, 0)
		var rows []cRow
		var bodies []string
		for k := range 2 {
			tag := fmt.Sprintf("%d", id*10+k+1_000_000)
			rows = append(rows, cRow{Device: "cdefault", Metric: "reading", Tag: tag, Value: float64(k + 1), TS: ts, Msg: k})
			bodies = append(bodies, fmt.Sprintf(`{"id":%s,"reading":%d,"timestamp":%q}`, tag, k+1, ts.Format(time.RFC3339Nano)))
		}
		return &cOp{Kind: "fast-twins", Client: "cdefault", Path: "/readings/fast", Body: bodies[0], Body2: bodies[1], Rows: rows}
	}
	panic("campaign: unknown class " + class)
}

// cTypedTable is the campaign's typed table, which the rules campaign-typed
// (MQTT, ctyped/{device_id}/data) and campaign-typed-http (/v1/readings?rule=)
// fill (cRulesFile).
const cTypedTable = "ctyped"

// cTypedTopic is the topic of a device's typed messages.
func cTypedTopic(dev string) string { return "ctyped/" + dev + "/data" }

// typed draws an op of rows of the typed table, timed by ts (old: near the
// retention's bound): one MQTT 3.1.1 or 5 publish at QoS 1 or 2 on the
// device's typed topic, or a /v1/readings?rule=campaign-typed-http post of
// one message or NDJSON of 2-4 (of several devices). One op in 8 sends a
// message that breaks the seq column's type (a string for a bigint): the
// whole message must be refused, none of its rows stored.
func (g *cGen) typed(id int, dev string, ts func(id, k int) time.Time, old bool) *cOp {
	r := g.r
	bad := r.IntN(8) == 0
	mk := func(d string, k int) cRow {
		return cRow{Table: cTypedTable, Device: d, Tag: fmt.Sprintf("t%d.%d", id, k), Value: value(id, k), Seq: int64(id)*10 + int64(k),
			TS: ts(id, k), Dedupable: g.dedup != "off", Old: old, Bad: bad}
	}
	if r.IntN(3) != 0 {
		row := mk(dev, 0)
		return &cOp{Kind: "typed", Client: dev, Proto: []int{3, 5}[r.IntN(2)], QoS: byte(1 + r.IntN(2)), Topic: cTypedTopic(dev),
			Body: g.typedBody(row, false), Rows: []cRow{row}}
	}
	op := &cOp{Kind: "typed-http", Client: dev, Path: "/v1/readings?rule=campaign-typed-http"}
	if r.IntN(2) == 0 {
		row := mk(dev, 0)
		op.Body, op.Rows = g.typedBody(row, true), []cRow{row}
		return op
	}
	n := 2 + r.IntN(3)
	var lines []string
	for k := range n {
		row := mk(g.device(r.IntN(cDevices)), k)
		row.Bad = bad && k == n-1 // the last line breaks the type: the whole request is refused
		op.Rows = append(op.Rows, row)
		lines = append(lines, g.typedBody(row, true))
	}
	op.Header, op.Body = map[string]string{"Content-Type": "application/x-ndjson"}, strings.Join(lines, "\n")+"\n"
	return op
}

// typedBody is the JSON of a typed message (withDevice: the HTTP rule's,
// which names the device in the body): t (unix ms), seq, v, msg_id, and
// cid, which no column takes (kept in extra). A Bad row's seq is a string.
func (g *cGen) typedBody(r cRow, withDevice bool) string {
	m := map[string]any{"t": r.TS.UnixMilli(), "seq": r.Seq, "v": r.Value, "msg_id": r.Tag, "cid": r.Tag}
	if r.Bad {
		m["seq"] = fmt.Sprintf("s%d", r.Seq)
	}
	if withDevice {
		m["device"] = r.Device
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// Devices of the identity class, all at the identity edge (cEnv.ident):
// certificate devices ci0.. (MQTT over TLS with a client certificate, no
// password), registry devices cr0.. (a device secret each in the registry:
// MQTT with it as password, HTTP Basic auth), and cx0, cx1, whose
// certificates the CRL revokes. A device speaks one MQTT version (an even
// number 3.1.1, an odd one 5), over one connection with its id as client id.
const (
	cIdentDevices = 4 // of each kind, certificate and registry
	cIdentRevoked = 2
)

// cIdentProto is the MQTT version identity device dev speaks.
func cIdentProto(dev string) int {
	if (dev[len(dev)-1]-'0')%2 == 0 {
		return 3
	}
	return 5
}

// cIdentCert says whether identity device dev proves itself by a client
// certificate (else by its registry secret).
func cIdentCert(dev string) bool { return strings.HasPrefix(dev, "ci") || strings.HasPrefix(dev, "cx") }

// cIdentIsRevoked says whether identity device dev's certificate is revoked.
func cIdentIsRevoked(dev string) bool { return strings.HasPrefix(dev, "cx") }

// identity draws an op of the identity class: a certificate or registry
// device publishing its own reading at QoS 1 or 2, or posting its own
// readings (one, or NDJSON of 2-3) over HTTPS with its client certificate
// or its secret; or a probe that must be refused, nothing of it stored: a
// certificate or registry device publishing another identity device's
// reading, or posting another's reading (alone, or after one of its own:
// the request is refused whole, 403), a revoked certificate's device
// publishing or posting its own.
func (g *cGen) identity(id int) *cOp {
	r := g.r
	cert := fmt.Sprintf("ci%d", r.IntN(cIdentDevices))
	reg := fmt.Sprintf("cr%d", r.IntN(cIdentDevices))
	other := func(dev string) string {
		for {
			if d := fmt.Sprintf("%s%d", []string{"ci", "cr"}[r.IntN(2)], r.IntN(cIdentDevices)); d != dev {
				return d
			}
		}
	}
	publish := func(dev string, row cRow) *cOp {
		// One publish in three logs in anew, so that logins go on under
		// every fault (PostgreSQL down: from the registry the edge loaded).
		return &cOp{Kind: "ident-mqtt", Client: dev, Proto: cIdentProto(dev), QoS: byte(1 + r.IntN(2)), Topic: "devices/" + row.Device + "/readings",
			Body: g.reading(row, false), Rows: []cRow{row}, Reconnect: r.IntN(3) == 0}
	}
	probe := func(op *cOp, target string) *cOp {
		op.Kind, op.Refuse, op.Target = "ident-probe", true, target
		return op
	}
	ts := g.ts(id, 0)
	switch n := r.IntN(20); {
	case n < 6:
		return publish(cert, g.row(cert, "reading", id, 0, ts))
	case n < 10:
		return publish(reg, g.row(reg, "reading", id, 0, ts))
	case n < 14:
		dev := reg
		if r.IntN(2) == 0 {
			dev = cert
		}
		op := &cOp{Kind: "ident-http", Client: dev, Path: "/v1/readings"}
		if r.IntN(2) == 0 {
			op.Rows = []cRow{g.row(dev, "reading", id, 0, ts)}
			op.Body = g.reading(op.Rows[0], true)
			return op
		}
		var lines []string
		for k := range 2 + r.IntN(2) {
			row := g.row(dev, "reading", id, k, g.ts(id, k))
			op.Rows, lines = append(op.Rows, row), append(lines, g.reading(row, true))
		}
		op.Header, op.Body = map[string]string{"Content-Type": "application/x-ndjson"}, strings.Join(lines, "\n")+"\n"
		return op
	case n < 17:
		dev := cert
		if r.IntN(2) == 0 {
			dev = reg
		}
		t := other(dev)
		return probe(publish(dev, g.row(t, "reading", id, 0, ts)), t)
	case n < 19:
		dev := reg
		if r.IntN(2) == 0 {
			dev = cert
		}
		t := other(dev)
		op := &cOp{Kind: "ident-probe-http", Client: dev, Path: "/v1/readings", Refuse: true, Target: t}
		if r.IntN(2) == 0 {
			op.Rows = []cRow{g.row(t, "reading", id, 0, ts)}
			op.Body = g.reading(op.Rows[0], true)
			return op
		}
		op.Rows = []cRow{g.row(dev, "reading", id, 0, ts), g.row(t, "reading", id, 1, g.ts(id, 1))}
		op.Header = map[string]string{"Content-Type": "application/x-ndjson"}
		op.Body = g.reading(op.Rows[0], true) + "\n" + g.reading(op.Rows[1], true) + "\n"
		return op
	default:
		dev := fmt.Sprintf("cx%d", r.IntN(cIdentRevoked))
		if r.IntN(2) == 0 {
			// Over HTTPS: its handshake fails, nothing is sent.
			op := &cOp{Kind: "ident-probe-http", Client: dev, Path: "/v1/readings", Refuse: true, Target: dev,
				Rows: []cRow{g.row(dev, "reading", id, 0, ts)}}
			op.Body = g.reading(op.Rows[0], true)
			return op
		}
		return probe(publish(dev, g.row(dev, "reading", id, 0, ts)), dev)
	}
}

// cSubTopic is the topic a device of the subscribed class publishes to at
// Mosquitto: the subscriber's --mqtt-topic csub/{device_id}/readings.
func cSubTopic(dev string) string { return "csub/" + dev + "/readings" }

// cSubDelivery is the QoS at which Mosquitto delivers to the subscriber a
// message published at qos: the lower of it and the subscription's.
func cSubDelivery(qos byte, subQoS int) byte { return min(qos, byte(subQoS)) }

// row is row k of op id: tag o<id>.<k>, the value and time given.
func (g *cGen) row(dev, metric string, id, k int, ts time.Time) cRow {
	return cRow{Device: dev, Metric: metric, Tag: fmt.Sprintf("o%d.%d", id, k), Value: value(id, k), TS: ts, Dedupable: g.dedup != "off"}
}

// reading is the JSON of one reading (withDevice: the /v1 shape), with its
// tag as cid and, under --dedup id, as msg_id.
func (g *cGen) reading(r cRow, withDevice bool) string {
	m := map[string]any{"reading": r.Value, "ts": r.TS.Format(time.RFC3339Nano), "cid": r.Tag}
	if withDevice {
		m["device_id"] = r.Device
	}
	if g.dedup == "id" {
		m["msg_id"] = r.Tag
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// mapped is a publish on the mapped topic fac/{site}/{line}/{device_id}/telemetry:
// two metrics, temp and pressure, timed by t (unix ms), id msg_id.
func (g *cGen) mapped(id int, dev, site string, ts time.Time, msgID string) *cOp {
	line := "line3"
	if site == "munich" {
		line = "line1"
	}
	op := &cOp{Kind: "mapped", Client: dev, Proto: []int{3, 5}[g.r.IntN(2)], QoS: byte(1 + g.r.IntN(2)),
		Topic: fmt.Sprintf("fac/%s/%s/%s/telemetry", site, line, dev)}
	cid := fmt.Sprintf("o%d", id)
	temp, pressure := value(id, 0), value(id, 1)
	op.Body = fmt.Sprintf(`{"t":%d,"temp":%v,"pressure":%v,"cid":%q,"msg_id":%q}`, ts.UnixMilli(), temp, pressure, cid, msgID)
	op.Rows = []cRow{
		{Device: dev, Metric: "temp", Tag: cid, Value: temp, TS: ts, Dedupable: g.dedup != "off"},
		{Device: dev, Metric: "pressure", Tag: cid, Value: pressure, TS: ts, Dedupable: g.dedup != "off"},
	}
	return op
}

// spbData is an NDATA of node (group "cg") with two metrics by alias (a
// spb-early op adds an alias no birth gave).
func (g *cGen) spbData(id int, node, kind string) *cOp {
	op := &cOp{Kind: kind, Client: node, Proto: 5, QoS: 1, Values: []float64{value(id, 0), value(id, 1)}}
	ts := g.ts(id, 0)
	for k, v := range op.Values {
		op.Rows = append(op.Rows, cRow{Device: "cg/" + node, Metric: fmt.Sprintf("M%d", k+1), Tag: strconv.FormatFloat(v, 'g', -1, 64), Value: v, TS: ts,
			Dedupable: g.dedup == "natural"})
	}
	if kind == "spb-early" && g.r.IntN(2) == 0 {
		op.Values = append(op.Values, value(id, 2)) // alias 9: no birth names it
		op.Rows = append(op.Rows, cRow{Device: "cg/" + node, Metric: "M9", Tag: strconv.FormatFloat(value(id, 2), 'g', -1, 64), Value: value(id, 2), TS: ts})
	}
	return op
}

// unknownAlias adds to a Sparkplug NDATA a third metric by alias 9, which no
// birth gives: the whole message must become an edge dead letter.
func (g *cGen) unknownAlias(op *cOp, id int) {
	v := value(id, 2)
	op.Values = append(op.Values, v)
	op.Rows = append(op.Rows, cRow{Device: op.Rows[0].Device, Metric: "M9", Tag: strconv.FormatFloat(v, 'g', -1, 64), Value: v, TS: op.Rows[0].TS})
}

// cStateTopic is the STATE topic of the campaign's (absent) host
// application, which only a write= grant may publish.
const cStateTopic = "spBv1.0/STATE/scada"

// cOtherGroup is a Sparkplug group no credential names.
const cOtherGroup = "og"

// spbProbe is an auth probe against Sparkplug B (under --mqtt-auth): an edge
// node births in a group its credentials do not name, or sends DATA as
// another edge node of its own group; a plain device publishes the host's
// STATE (retained) or connects with it as its will. Each must be refused and
// nothing of it stored or delivered (an observer subscribes to STATE and to
// the other group).
func (g *cGen) spbProbe(id int, dev string) *cOp {
	r := g.r
	node := fmt.Sprintf("e%d", r.IntN(cEdgeNodes))
	state := fmt.Sprintf(`{"online":false,"timestamp":%d,"cid":"o%d"}`, g.ts(id, 0).UnixMilli(), id)
	// The rows a probe would make if it were let through (the NBIRTH's or
	// the NDATA's values, under the device it names): never stored.
	rows := func(device string) []cRow {
		var out []cRow
		for k := range 2 {
			v := value(id, k)
			out = append(out, cRow{Device: device, Metric: fmt.Sprintf("M%d", k+1), Tag: strconv.FormatFloat(v, 'g', -1, 64), Value: v, TS: g.ts(id, 0)})
		}
		return out
	}
	switch r.IntN(4) {
	case 0:
		return &cOp{Kind: "spb-probe-group", Client: node, Topic: "spBv1.0/" + cOtherGroup + "/NBIRTH/" + node,
			Values: []float64{value(id, 0), value(id, 1)}, Rows: rows(cOtherGroup + "/" + node), Refuse: true, Target: cOtherGroup + "/" + node}
	case 1:
		other := fmt.Sprintf("e%d", r.IntN(cEdgeNodes))
		for other == node {
			other = fmt.Sprintf("e%d", r.IntN(cEdgeNodes))
		}
		return &cOp{Kind: "spb-probe-node", Client: node, Topic: spbTopic("NDATA", other),
			Values: []float64{value(id, 0), value(id, 1)}, Rows: rows(cSpbGroup + "/" + other), Refuse: true, Target: cSpbGroup + "/" + other}
	case 2:
		return &cOp{Kind: "spb-probe-state", Client: dev, Proto: 5, QoS: 1, Topic: cStateTopic, Body: state, Refuse: true, Target: cStateTopic}
	default:
		return &cOp{Kind: "spb-probe-will", Client: dev, Proto: 5, QoS: 1, Topic: cStateTopic, Body: state, Refuse: true, Target: cStateTopic}
	}
}

// schedule draws the faults, one at a time, from the kinds enabled (the
// Redis kinds matching the seed's persistence, the subscriber's and
// Mosquitto's with the subscribed class) in a shuffled cycle. At the usual
// pace each lasts 5-24 ops (a restore 10-39) with 10-59 ops of calm after
// it, about 49 ops a fault. A run too short for one cycle at that pace (the
// short form: 300 ops, 12 kinds) gets one cycle: a fault of every kind, so
// that each seed meets all of its kinds.
func (g *cGen) schedule(s cSettings) []cFault {
	var kinds []string
	for _, k := range s.Faults {
		cluster := g.p.Persist == "cluster"
		switch {
		case k == fRedisKill && g.p.Persist != "aof", k == fRedisRestore && g.p.Persist != "rdb",
			k == fClusterFail && !cluster, cluster && (k == fFreezeEdgeR || k == fFreezeBrR):
			continue // (cluster nodes are reached directly: the proxies cannot stand between)
		case (k == fSubKill || k == fSubStop || k == fMosqRestart) && g.p.SubQoS == 0:
			continue // no subscriber without the subscribed class
		}
		kinds = append(kinds, k)
	}
	if len(kinds) == 0 {
		return nil
	}
	// Kinds in a shuffled cycle: each seed meets them in an order of its own.
	g.r.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	var out []cFault
	if n := len(kinds); s.Ops-100 < 49*n {
		// n equal slots from op 20 to op Ops-40, a fault in each: it starts
		// in the slot's first quarter and lasts at most half of it (at least
		// 3 ops, a restore 4), so that each slot ends in calm.
		slot := max(8, (s.Ops-60)/n)
		for i, k := range kinds {
			f := cFault{At: 20 + i*slot + g.r.IntN(slot/4), Len: 3 + g.r.IntN(slot/2-2), Kind: k}
			if k == fRedisRestore {
				f.Len = max(f.Len, 4)
			}
			if f.At >= s.Ops-40 {
				break
			}
			out = append(out, f)
		}
		return out
	}
	for at := 20 + g.r.IntN(40); at < s.Ops-40; {
		f := cFault{At: at, Len: 5 + g.r.IntN(20), Kind: kinds[len(out)%len(kinds)]}
		if f.Kind == fRedisRestore {
			f.Len = 10 + g.r.IntN(30)
		}
		out = append(out, f)
		at += f.Len + 10 + g.r.IntN(50)
	}
	return out
}
