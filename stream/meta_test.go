package stream_test

import (
	"testing"

	"firehose/internal/testenv"
	"firehose/stream"
)

func TestShardMetaKeySharesTheStreamsHashTag(t *testing.T) {
	tests := []struct {
		name  string
		s     stream.Streams
		shard int
		want  string
	}{
		{name: "first", s: stream.Streams{Prefix: "fh", Count: 4}, shard: 0, want: "fh:meta:{fh:0.1}"},
		{name: "last", s: stream.Streams{Prefix: "fh", Count: 4}, shard: 3, want: "fh:meta:{fh:3.3}"},
		{name: "legacy", s: stream.Streams{Prefix: "fh", Count: 4, Layout: stream.LayoutLegacy}, shard: 3, want: "fh:meta:{3}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.s
			got := s.ShardMetaKey(tt.shard)
			if got != tt.want {
				t.Errorf("ShardMetaKey(%d) = %q, want %q", tt.shard, got, tt.want)
			}
			if tag := "{" + got[len("fh:meta:{"):]; s.Key(tt.shard)[len("fh:readings:"):] != tag {
				t.Errorf("%q and %q do not share a hash tag", got, s.Key(tt.shard))
			}
			for _, k := range s.ShardDedupKeys(tt.shard) {
				if stream.ClusterSlot(k) != stream.ClusterSlot(s.Key(tt.shard)) {
					t.Errorf("%q and %q are not in one slot: the dedup script cannot touch both on a cluster", k, s.Key(tt.shard))
				}
			}
		})
	}
	if a, b := stream.NewGeneration(), stream.NewGeneration(); a == b || len(a) != 32 {
		t.Errorf("NewGeneration gave %q and %q; want two different 32-hex-digit tokens", a, b)
	}
}

func TestIntegrationGenerationIsCreatedOnce(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := stream.Streams{Prefix: prefix, Count: 3}
	if err := stream.EnsureGeneration(t.Context(), rdb, s); err != nil {
		t.Fatal(err)
	}
	first := make([]string, s.Len())
	for shard := range s.Len() {
		m, err := stream.ReadShardMeta(t.Context(), rdb, s, shard)
		if err != nil {
			t.Fatal(err)
		}
		if m.Generation == "" || m.Deployment != "" {
			t.Fatalf("shard %d after EnsureGeneration: %+v, want a generation and no deployment", shard, m)
		}
		first[shard] = m.Generation
	}
	if err := stream.EnsureGeneration(t.Context(), rdb, s); err != nil {
		t.Fatal(err)
	}
	for shard := range s.Len() {
		m, err := stream.ClaimShardMeta(t.Context(), rdb, s, shard, "dep-a")
		if err != nil {
			t.Fatal(err)
		}
		if m.Generation != first[shard] || m.Deployment != "dep-a" {
			t.Errorf("shard %d: %+v, want generation %s kept and deployment dep-a", shard, m, first[shard])
		}
		m, err = stream.ClaimShardMeta(t.Context(), rdb, s, shard, "dep-b")
		if err != nil {
			t.Fatal(err)
		}
		if m.Deployment != "dep-a" {
			t.Errorf("shard %d: a second claim changed the deployment to %q", shard, m.Deployment)
		}
	}
	// Redis lost everything: a new token.
	if err := rdb.Del(t.Context(), s.ShardMetaKey(0)).Err(); err != nil {
		t.Fatal(err)
	}
	m, err := stream.ClaimShardMeta(t.Context(), rdb, s, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if m.Generation == "" || m.Generation == first[0] {
		t.Errorf("generation after the loss %q, want a new one (was %q)", m.Generation, first[0])
	}
}
