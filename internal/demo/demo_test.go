package demo

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"firehose/simulator"
)

// gateway answers like firehose's: 200 to every reading, or 503 with
// Retry-After: 0 to the first refuse requests.
type gateway struct {
	mu       sync.Mutex
	readings map[string]int // by path
	devices  map[string]bool
	refuse   atomic.Int64
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if g.refuse.Add(-1) >= 0 {
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch r.URL.Path {
	case "/readings/fast":
		g.readings[r.URL.Path]++
		g.devices[r.Header.Get("X-Device-ID")] = true
	case "/v1/readings":
		var rs []struct {
			DeviceID string `json:"device_id"`
		}
		if err := json.Unmarshal(body, &rs); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		g.readings[r.URL.Path] += len(rs)
		for _, r := range rs {
			g.devices[r.DeviceID] = true
		}
	default:
		http.NotFound(w, r)
	}
}

func newGateway(t *testing.T, refuse int64) (*gateway, string) {
	g := &gateway{readings: map[string]int{}, devices: map[string]bool{}}
	g.refuse.Store(refuse)
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, srv.URL
}

func TestSendSplitsReadingsOverBothEndpoints(t *testing.T) {
	g, base := newGateway(t, 0)
	res := Send(context.Background(), base, "r1", Config{Readings: 251, Concurrency: 4})
	if res.Accepted.Load() != 251 || res.Refused.Load() != 0 || res.Errors.Load() != 0 {
		t.Fatalf("accepted %d, refused %d, errors %d; want 251, 0, 0", res.Accepted.Load(), res.Refused.Load(), res.Errors.Load())
	}
	if g.readings["/readings/fast"] != 125 || g.readings["/v1/readings"] != 126 {
		t.Errorf("readings by path %v; want 125 fast, 126 native", g.readings)
	}
	for d := range g.devices {
		if !strings.HasPrefix(d, "demo-r1-") {
			t.Errorf("device %q outside the run's prefix demo-r1-", d)
		}
	}
}

func TestSendRetriesRefusals(t *testing.T) {
	g, base := newGateway(t, 3)
	res := Send(context.Background(), base, "r2", Config{Readings: 10, Concurrency: 1})
	if res.Accepted.Load() != 10 || res.Refused.Load() != 0 {
		t.Fatalf("accepted %d, refused %d; want every reading accepted after the retries", res.Accepted.Load(), res.Refused.Load())
	}
	if g.readings["/readings/fast"] != 5 || g.readings["/v1/readings"] != 5 {
		t.Errorf("readings by path %v; want 5 and 5", g.readings)
	}
}

func TestSendCountsWhatStaysRefused(t *testing.T) {
	_, base := newGateway(t, 1<<30)
	res := Send(context.Background(), base, "r3", Config{Readings: 4, Concurrency: 2})
	if res.Accepted.Load() != 0 || res.Refused.Load() != 4 {
		t.Fatalf("accepted %d, refused %d; want 0, 4", res.Accepted.Load(), res.Refused.Load())
	}
}

func TestSendCountsUnreachableAsErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close()
	res := Send(context.Background(), base, "r4", Config{Readings: 4, Concurrency: 2})
	if res.Errors.Load() != 4 {
		t.Fatalf("errors %d; want 4", res.Errors.Load())
	}
}

func TestFleet(t *testing.T) {
	c := Config{MQTTDevices: 7, MQTTRate: 70, MQTTDuration: 3 * time.Second, LandTimeout: time.Minute}
	sc := Fleet(c, "tcp://127.0.0.1:1", "devices/+/readings", "postgres://db", "http://gw", "ab12")
	if sc == nil {
		t.Fatal("Fleet = nil; want a configuration")
	}
	if sc.Protocol != simulator.ProtocolMQTT || sc.MQTT != "tcp://127.0.0.1:1" || sc.MQTTTopic != "devices/+/readings" || sc.QoS != 1 ||
		sc.Devices != 7 || sc.Rate != 70 || sc.Duration != 3*time.Second || sc.Postgres != "postgres://db" ||
		sc.Metrics != "http://gw/metrics" || sc.LandTimeout != time.Minute || sc.RunID != "demoab12" {
		t.Errorf("Fleet = %+v", *sc)
	}
	c.MQTTDevices = 0
	if sc := Fleet(c, "tcp://127.0.0.1:1", "t", "p", "b", "r"); sc != nil {
		t.Errorf("Fleet with no devices = %+v; want nil", *sc)
	}
}

func TestNewRunID(t *testing.T) {
	a, b := NewRunID(), NewRunID()
	if !regexp.MustCompile(`^[0-9a-f]{8}$`).MatchString(a) || a == b {
		t.Errorf("NewRunID = %q, %q; want two different 8 hex digits", a, b)
	}
}
