package stream_test

import (
	"strings"
	"testing"

	"firehose/stream"
)

func TestReplicaRisks(t *testing.T) {
	for _, c := range []struct {
		replicas, min int
		want          string // "" for no risk
	}{
		{0, 0, ""},
		{2, 2, ""},
		{3, 1, ""},
		{1, 0, "a failover loses"},
		{0, 1, "every write is refused"},
		{1, 2, "every write is refused"},
	} {
		got := stream.RedisPersistence{Replicas: c.replicas}.ReplicaRisks(c.min)
		switch {
		case c.want == "" && len(got) != 0:
			t.Errorf("%d replicas, min %d: %q, want none", c.replicas, c.min, got)
		case c.want != "" && (len(got) != 1 || !strings.Contains(got[0], c.want)):
			t.Errorf("%d replicas, min %d: %q, want one saying %q", c.replicas, c.min, got, c.want)
		}
	}
}
