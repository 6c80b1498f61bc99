package httpgw

import (
	"context"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// startProducer runs a real producer on the test's Redis prefix until the
// test ends.
func startProducer(t *testing.T) (*stream.Producer, *redis.Client, stream.Streams) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 4}
	p := stream.NewProducer(rdb, streams, stream.ProducerConfig{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("producer Run: %v", err)
		}
	})
	// Ready once the first backlog measurement reached Redis.
	testenv.Eventually(t, 5*time.Second, func() bool { return p.Ready() == nil }, "producer not ready")
	return p, rdb, streams
}

// streamReadings decodes every entry of every shard stream, with the shard
// each was found in.
func streamReadings(t *testing.T, rdb *redis.Client, streams stream.Streams) (rs []ingest.Reading, shards []int) {
	t.Helper()
	for shard, key := range streams.Keys() {
		msgs, err := rdb.XRange(t.Context(), key, "-", "+").Result()
		if err != nil {
			t.Fatalf("xrange %s: %v", key, err)
		}
		for _, m := range msgs {
			part, err := ingest.DecodeEntry(m.Values)
			if err != nil {
				t.Fatalf("decode entry %s of %s: %v", m.ID, key, err)
			}
			for _, r := range part {
				rs = append(rs, r)
				shards = append(shards, shard)
			}
		}
	}
	return rs, shards
}

// TestIntegrationEndpointsToRedis posts through both endpoints and finds
// exactly the acknowledged readings in the right streams, and nothing of a
// refused request.
func TestIntegrationEndpointsToRedis(t *testing.T) {
	p, rdb, streams := startProducer(t)
	s := newTestServer(t, Config{}, p)
	h := s.Handler()
	ts := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	tsText := ts.Format(time.RFC3339Nano)

	steps := []struct {
		name, path, contentType, body string
		header                        []string
		wantCode                      int
	}{
		{name: "fast default device", path: "/readings/fast", body: `{"id": 1, "reading": 100}`, wantCode: 200},
		{name: "fast header device", path: "/readings/fast", body: `{"id": 2, "reading": -7, "timestamp": "` + tsText + `"}`, header: []string{"X-Device-ID", "pump-7"}, wantCode: 200},
		{name: "v1 array", path: "/v1/readings", body: `[{"device_id": "pump-7", "reading": 1.5, "ts": "` + tsText + `", "battery": 97}, {"device_id": "fan-2", "reading": 2}]`, wantCode: 200},
		{name: "v1 ndjson", path: "/v1/readings", contentType: "application/x-ndjson", body: "{\"device_id\": \"fan-3\", \"reading\": 3}\n{\"device_id\": \"fan-4\", \"reading\": 4}\n", wantCode: 200},
		{name: "v1 refused: nothing stored", path: "/v1/readings", body: `[{"device_id": "bad-1", "reading": 1}, {"device_id": "bad-2"}]`, wantCode: 422},
		{name: "fast refused", path: "/readings/fast", body: `{"id": 3, "reading": 99999}`, wantCode: 422},
	}
	for _, st := range steps {
		hdr := append([]string{"Content-Type", st.contentType}, st.header...)
		if rec := post(h, st.path, st.body, hdr...); rec.Code != st.wantCode {
			t.Fatalf("%s: code %d, want %d; body %s", st.name, rec.Code, st.wantCode, rec.Body)
		}
	}

	got, shards := streamReadings(t, rdb, streams)
	type entry struct {
		device  string
		value   float64
		payload string
		time    time.Time // zero: same as ReceivedAt
	}
	want := []entry{
		{"seed", 100, `{"id":1}`, time.Time{}},
		{"pump-7", -7, `{"id":2}`, ts},
		{"pump-7", 1.5, `{"battery":97}`, ts},
		{"fan-2", 2, "", time.Time{}},
		{"fan-3", 3, "", time.Time{}},
		{"fan-4", 4, "", time.Time{}},
	}
	if len(got) != len(want) {
		t.Fatalf("streams hold %d entries, want %d: %+v", len(got), len(want), got)
	}
	var gotEntries []entry
	for i, r := range got {
		if shards[i] != streams.Shard(r.DeviceID) {
			t.Errorf("reading of %s in shard %d, want %d", r.DeviceID, shards[i], streams.Shard(r.DeviceID))
		}
		if r.ReceivedAt.IsZero() || time.Since(r.ReceivedAt) > time.Minute {
			t.Errorf("reading %+v: ReceivedAt not the time of receipt", r)
		}
		e := entry{r.DeviceID, r.Value, string(r.Payload), r.Time}
		if r.Time.Equal(r.ReceivedAt) {
			e.time = time.Time{}
		}
		gotEntries = append(gotEntries, e)
	}
	key := func(e entry) string { return e.device + "|" + e.payload + "|" + e.time.String() }
	sort.Slice(gotEntries, func(i, j int) bool { return key(gotEntries[i]) < key(gotEntries[j]) })
	sort.Slice(want, func(i, j int) bool { return key(want[i]) < key(want[j]) })
	for i := range want {
		g, w := gotEntries[i], want[i]
		if g.device != w.device || g.value != w.value || g.payload != w.payload || !g.time.Equal(w.time) {
			t.Errorf("entry %d = %+v, want %+v", i, g, w)
		}
	}
}

// TestIntegrationRunOverHTTP serves on a real port, is hit over real HTTP,
// and stops cleanly when its context ends.
func TestIntegrationRunOverHTTP(t *testing.T) {
	p, rdb, streams := startProducer(t)
	s := newTestServer(t, Config{Addr: "127.0.0.1:0"}, p)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	testenv.Eventually(t, 5*time.Second, func() bool { return s.Addr() != nil }, "server not listening")
	base := "http://" + s.Addr().String()

	for i, body := range []string{`{"id": 1, "reading": 1}`, `{"id": 2, "reading": 2}`} {
		resp, err := http.Post(base+"/readings/fast", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("post %d: %v", i, err)
		}
		if b := readAll(t, resp.Body); resp.StatusCode != 200 || !strings.Contains(b, `"status":"buffered"`) {
			t.Errorf("post %d: %d %s", i, resp.StatusCode, b)
		}
		resp.Body.Close()
	}
	resp, err := http.Post(base+"/v1/readings", "application/x-ndjson", strings.NewReader("{\"device_id\":\"a\",\"reading\":1}\n{\"device_id\":\"b\",\"reading\":2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, resp.Body); resp.StatusCode != 200 || b != `{"accepted":2}` {
		t.Errorf("v1: %d %s", resp.StatusCode, b)
	}
	resp.Body.Close()
	resp, err = http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Errorf("readyz = %d", resp.StatusCode)
	}
	resp.Body.Close()

	if got, _ := streamReadings(t, rdb, streams); len(got) != 4 {
		t.Errorf("streams hold %d entries, want 4", len(got))
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
