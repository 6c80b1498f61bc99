package subscriber

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestWriteStates(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	fresh, _ := json.Marshal(State{Broker: "tcp://mq:1883", ClientID: "fh-1", Connected: true, SessionPresent: true, Protocol: "5",
		InFlight: 12, Received: 3400, Redeliveries: 7, Recognised: 7, Reported: now.Add(-2 * time.Second)})
	old, _ := json.Marshal(State{Broker: "tcp://mq:1883", ClientID: "fh-2", Connected: true, Reported: now.Add(-time.Minute)})
	down, _ := json.Marshal(State{Broker: "tcp://mq:1883", ClientID: "fh-3", LastError: "dial tcp: connection refused", Reported: now})
	var b strings.Builder
	if err := WriteStates(&b, map[string]string{"fh-1": string(fresh), "fh-2": string(old), "fh-3": string(down)}, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"fh-1        tcp://mq:1883  yes", "3400", "2s ago", "fh-2", "(stale: stopped?)", "fh-3: last error: dial tcp: connection refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	if err := WriteStates(&b, nil, now); err != nil || b.Len() != 0 {
		t.Errorf("no subscribers: %q, %v; want nothing", b.String(), err)
	}
}
