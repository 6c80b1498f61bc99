package faults

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/internal/testenv"
)

// poCase is one kind of poison: stream entry fields the bridge cannot
// decode, or a reading it decodes that PostgreSQL refuses.
type poCase struct {
	name    string
	reason  string // label of firehose_bridge_rows_rejected_total: decode or refused
	fields  func(body []byte) map[string]any
	raw     func(body []byte) []byte // what readings_rejected.raw must hold
	version any                      // readings_rejected.version: a string, or nil for NULL
	errText string                   // in readings_rejected.error
	reading func(r *ingest.Reading)  // alters the encoded reading (bypassing validation)
}

func poEntry(version, body any) map[string]any {
	m := map[string]any{}
	if version != nil {
		m[ingest.FieldVersion] = version
	}
	if body != nil {
		m[ingest.FieldBody] = body
	}
	return m
}

func poSame(body []byte) []byte { return body }

var poCases = []poCase{
	{name: "unknown encoding version", reason: "decode", version: "99", errText: "unknown stream encoding version",
		fields: func(b []byte) map[string]any { return poEntry("99", b) }, raw: poSame},
	{name: "no encoding version", reason: "decode", version: nil, errText: "unknown stream encoding version",
		fields: func(b []byte) map[string]any { return poEntry(nil, b) }, raw: poSame},
	{name: "version of invalid UTF-8 and NUL", reason: "decode", version: "\uFFFD\\0", errText: "unknown stream encoding version",
		fields: func(b []byte) map[string]any { return poEntry("\xff\x00", b) }, raw: poSame},
	{name: "no body", reason: "decode", version: ingest.CodecVersion, errText: `no "b" field`,
		fields: func([]byte) map[string]any { return map[string]any{ingest.FieldVersion: ingest.CodecVersion, "x": "y"} },
		raw:    func([]byte) []byte { return nil }}, // a dump of the fields; checked apart
	{name: "truncated body", reason: "decode", version: ingest.CodecVersion, errText: "corrupt stream entry",
		fields: func(b []byte) map[string]any { return poEntry(ingest.CodecVersion, b[:len(b)-6]) },
		raw:    func(b []byte) []byte { return b[:len(b)-6] }},
	{name: "bytes after the body", reason: "decode", version: ingest.CodecVersion, errText: "after the end",
		fields: func(b []byte) map[string]any { return poEntry(ingest.CodecVersion, append(bytes.Clone(b), "junk"...)) },
		raw:    func(b []byte) []byte { return append(bytes.Clone(b), "junk"...) }},
	{name: "empty body", reason: "decode", version: ingest.CodecVersion, errText: "corrupt stream entry",
		fields: func([]byte) map[string]any { return poEntry(ingest.CodecVersion, "") },
		raw:    func([]byte) []byte { return []byte{} }},
	{name: "device id of invalid UTF-8", reason: "refused", version: ingest.CodecVersion, errText: "invalid byte sequence",
		reading: func(r *ingest.Reading) { r.DeviceID = "bad-poison-\xff\xfe" }},
	{name: "device id with a NUL byte", reason: "refused", version: ingest.CodecVersion, errText: "invalid byte sequence",
		reading: func(r *ingest.Reading) { r.DeviceID = "bad-poison-\x00nul" }},
	{name: `payload with the escape \u0000`, reason: "refused", version: ingest.CodecVersion, errText: "unsupported Unicode escape sequence",
		reading: func(r *ingest.Reading) {
			r.DeviceID = "bad-poison-nul-escape"
			r.Payload = []byte(`{"note":"a\u0000b"}`)
		}},
	{name: "payload that is not JSON", reason: "refused", version: ingest.CodecVersion, errText: "invalid input syntax for type json",
		reading: func(r *ingest.Reading) { r.DeviceID = "bad-poison-not-json"; r.Payload = []byte(`{"note":`) }},
	{name: "payload of invalid UTF-8", reason: "refused", version: ingest.CodecVersion, errText: "invalid byte sequence",
		reading: func(r *ingest.Reading) {
			r.DeviceID = "bad-poison-payload-utf8"
			r.Payload = []byte("{\"note\":\"caf\xe9\"}")
		}},
}

// poWritten is a poison entry as written, with its good neighbours.
type poWritten struct {
	c          poCase
	key, id    string
	body       []byte // the encoded reading the entry was built from
	neighbours []string
}

// TestPoisonEntriesAreRejected writes poison straight into the shard streams
// of a stack under load - entries the bridge cannot decode, and readings it
// decodes but PostgreSQL refuses - each between two good entries of its own.
// Each poison entry lands in readings_rejected with its raw entry and the
// error, counted exactly by reason in firehose_bridge_rows_rejected_total;
// everything around it lands: its neighbours once each, the load exactly
// once, and the streams drain.
func TestPoisonEntriesAreRejected(t *testing.T) {
	skipShort(t)
	t.Parallel()
	svc := SharedServices(t)
	s := StartStack(t, svc)
	rdb := edgeRedis(t, s)
	l := StartLoad(t, s, LoadOpts{Devices: 100, Rate: scale(500.0, 2000.0), Duration: scale(10*time.Second, 60*time.Second)})
	edgeWaitLoadRunning(t, s, l)

	rounds := scale(2, 10)
	var written []poWritten
	for round := range rounds {
		for i, c := range poCases {
			written = append(written, poWrite(t, rdb, edgeStreams(s).Key((round+i)%edgeShards), round, c))
		}
		if round < rounds-1 {
			time.Sleep(scale(2*time.Second, 4*time.Second)) // pacing: spread the rounds over the load
		}
	}

	want := map[string]int{}
	for _, w := range written {
		want[w.c.reason]++
	}
	rejected := func() int64 { return QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings_rejected") }
	testenv.Eventually(t, 2*time.Minute, func() bool { return rejected() >= int64(len(written)) },
		"readings_rejected has %d rows, want %d", edgeLazy(func() string { return fmt.Sprint(rejected()) }), len(written))

	rep := l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	edgeWaitDrained(t, s, rdb, 2*time.Minute)

	if n := rejected(); n != int64(len(written)) {
		t.Errorf("readings_rejected has %d rows, want exactly the %d poison entries", n, len(written))
	}
	rows := poRejectedRows(t, svc.Postgres)
	for _, w := range written {
		r, ok := rows[w.key+" "+w.id]
		if !ok {
			t.Errorf("%s (%s %s) is not in readings_rejected", w.c.name, w.key, w.id)
			continue
		}
		if !strings.Contains(r.err, w.c.errText) {
			t.Errorf("%s: error %q, want it to name %q", w.c.name, r.err, w.c.errText)
		}
		if fmt.Sprint(r.version) != fmt.Sprint(w.c.version) {
			t.Errorf("%s: version %v, want %v", w.c.name, r.version, w.c.version)
		}
		wantRaw := w.body
		if w.c.raw != nil {
			wantRaw = w.c.raw(w.body)
		}
		switch {
		case w.c.name == "no body":
			if !strings.Contains(string(r.raw), "x=y") || !strings.Contains(string(r.raw), "v=1") {
				t.Errorf("%s: raw %q, want a dump of the entry's fields", w.c.name, r.raw)
			}
		case !bytes.Equal(r.raw, wantRaw):
			t.Errorf("%s: raw %q, want the entry's body %q", w.c.name, r.raw, wantRaw)
		}
		for _, dev := range w.neighbours {
			if n := edgeRowsOf(t, svc.Postgres, dev, nil); n != 1 {
				t.Errorf("%s: neighbour %s landed %d times, want once", w.c.name, dev, n)
			}
		}
	}
	if ids := edgeStrangers(t, svc.Postgres); len(ids) > 0 {
		t.Errorf("poison readings landed in readings, devices %q", ids)
	}
	for reason, n := range want {
		name := fmt.Sprintf(`firehose_bridge_rows_rejected_total{reason=%q}`, reason)
		if got, _ := s.Metric(name); int(got) != n {
			t.Errorf("%s = %v, want %d", name, got, n)
		}
	}
	if s.Proc.Exited() {
		t.Fatalf("firehose exited: %s", s.Proc.Output())
	}

	r := ResultOf(rep)
	r.Scenario = "7. poison entries"
	r.Load = LoadDesc(rep)
	r.Faults = fmt.Sprintf("%d poison entries written straight into the shard streams (%d kinds x %d rounds): %d undecodable, %d refused by PostgreSQL",
		len(written), len(poCases), rounds, want["decode"], want["refused"])
	r.Notes = fmt.Sprintf("each in readings_rejected with raw entry and error, counted by reason; its %d good neighbours landed once each; streams drained",
		2*len(written))
	Record(t, r)
	s.Stop(30 * time.Second)
}

// poWrite adds, in one MULTI, a good reading, the poison entry, and another
// good reading to stream key, so that the poison sits inside a batch.
func poWrite(t *testing.T, rdb *redis.Client, key string, round int, c poCase) poWritten {
	t.Helper()
	now := time.Now()
	slug := strings.NewReplacer(" ", "-", `\`, "").Replace(strings.ToLower(c.name))
	good := func(side string) (string, []byte) {
		dev := fmt.Sprintf("ok-poison-%d-%s-%s", round, slug, side)
		r := ingest.Reading{DeviceID: dev, Time: now, ReceivedAt: now, Value: float64(round), Payload: []byte(`{"poison_neighbour":true}`)}
		return dev, ingest.AppendEncode(nil, &r)
	}
	r := ingest.Reading{DeviceID: fmt.Sprintf("bad-poison-%d", round), Time: now, ReceivedAt: now, Value: 1}
	if c.reading != nil {
		c.reading(&r)
	}
	body := ingest.AppendEncode(nil, &r)
	fields := poEntry(ingest.CodecVersion, body)
	if c.fields != nil {
		fields = c.fields(body)
	}
	before, beforeBody := good("before")
	after, afterBody := good("after")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var poison *redis.StringCmd
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: poEntry(ingest.CodecVersion, beforeBody)})
		poison = p.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: fields})
		p.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: poEntry(ingest.CodecVersion, afterBody)})
		return nil
	})
	if err != nil {
		t.Fatalf("write poison %q into %s: %v", c.name, key, err)
	}
	return poWritten{c: c, key: key, id: poison.Val(), body: body, neighbours: []string{before, after}}
}

type poRejected struct {
	version any
	raw     []byte
	err     string
}

// poRejectedRows reads readings_rejected by "stream entry_id".
func poRejectedRows(t *testing.T, dbURL string) map[string]poRejected {
	t.Helper()
	ctx, conn, done := dbConn(t, dbURL, 30*time.Second)
	defer done()
	rows, err := conn.Query(ctx, "SELECT stream, entry_id, version, raw, error FROM readings_rejected")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]poRejected{}
	for rows.Next() {
		var stream, id, msg string
		var version *string
		var raw []byte
		if err := rows.Scan(&stream, &id, &version, &raw, &msg); err != nil {
			t.Fatal(err)
		}
		r := poRejected{raw: raw, err: msg}
		if version != nil {
			r.version = *version
		}
		out[stream+" "+id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
