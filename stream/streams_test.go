package stream_test

import (
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"testing"

	"firehose/stream"
)

func TestStreamsKeys(t *testing.T) {
	tests := []struct {
		name    string
		s       stream.Streams
		wantLen int
		keys    []string
		meta    string
	}{
		{name: "defaults", s: stream.Streams{}, wantLen: 4,
			keys: []string{"firehose:readings:{firehose:0.2}", "firehose:readings:{firehose:1.4}", "firehose:readings:{firehose:2.2}", "firehose:readings:{firehose:3.4}"},
			meta: "firehose:meta"},
		{name: "negative count means default", s: stream.Streams{Prefix: "p", Count: -1}, wantLen: 4, meta: "p:meta"},
		{name: "one shard", s: stream.Streams{Prefix: "fh", Count: 1}, wantLen: 1, keys: []string{"fh:readings:{fh:0}"}, meta: "fh:meta"},
		{name: "custom", s: stream.Streams{Prefix: "plant-3", Count: 12}, wantLen: 12, meta: "plant-3:meta"},
		{name: "many", s: stream.Streams{Prefix: "x", Count: 1024}, wantLen: 1024, meta: "x:meta"},
		{name: "legacy", s: stream.Streams{Prefix: "p", Count: 4, Layout: stream.LayoutLegacy}, wantLen: 4,
			keys: []string{"p:readings:{0}", "p:readings:{1}", "p:readings:{2}", "p:readings:{3}"}, meta: "p:meta"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.Len(); got != tt.wantLen {
				t.Errorf("Len() = %d, want %d", got, tt.wantLen)
			}
			keys := tt.s.Keys()
			if len(keys) != tt.wantLen {
				t.Fatalf("Keys() has %d keys, want %d", len(keys), tt.wantLen)
			}
			prefix := tt.s.Prefix
			if prefix == "" {
				prefix = "firehose"
			}
			for i, k := range keys {
				if k != tt.s.Key(i) {
					t.Errorf("Keys()[%d] = %q, Key(%d) = %q", i, k, i, tt.s.Key(i))
				}
				if !strings.HasPrefix(k, prefix+":readings:{") || strings.Count(k, "{") != 1 || !strings.HasSuffix(k, "}") {
					t.Errorf("key %q is not %s:readings:{tag}", k, prefix)
				}
				if tt.keys != nil && k != tt.keys[i] {
					t.Errorf("Keys()[%d] = %q, want %q", i, k, tt.keys[i])
				}
				// The shard's metadata shares the stream's slot.
				if meta := tt.s.ShardMetaKey(i); stream.ClusterSlot(meta) != stream.ClusterSlot(k) {
					t.Errorf("slot of %s = %d, of %s = %d: want the same", meta, stream.ClusterSlot(meta), k, stream.ClusterSlot(k))
				}
				if tt.s.Layout == stream.LayoutLegacy {
					continue
				}
				// Shard i's slot is in the i-th 1/N of the slots, so shards
				// spread evenly over primaries with equal slot ranges.
				n := tt.s.Len()
				if slot := stream.ClusterSlot(k); slot < i*16384/n || slot >= (i+1)*16384/n {
					t.Errorf("slot of %s = %d, want in [%d, %d)", k, slot, i*16384/n, (i+1)*16384/n)
				}
			}
			if got := tt.s.MetaKey(); got != tt.meta {
				t.Errorf("MetaKey() = %q, want %q", got, tt.meta)
			}
		})
	}
}

func TestClusterSlot(t *testing.T) {
	// Values from the Redis Cluster specification and CLUSTER KEYSLOT.
	tests := []struct {
		key  string
		want int
	}{
		{"123456789", 12739}, // the specification's CRC16 check value 0x31C3
		{"foo", 12182},
		{"{user1000}.following", 3443},
		{"{user1000}.followers", 3443},
		{"foo{}{bar}", 8363}, // empty tag: the whole key
		{"foo{{bar}}zap", 4015},
		{"foo{bar}{zap}", 5061},
		{"{", 4092},
	}
	for _, tt := range tests {
		if got := stream.ClusterSlot(tt.key); got != tt.want {
			t.Errorf("ClusterSlot(%q) = %d, want %d", tt.key, got, tt.want)
		}
	}
}

func TestStreamsShard(t *testing.T) {
	ids := []string{"", "pump-7", "pump-8", "température", "🌡", strings.Repeat("x", 128)}
	for _, count := range []int{0, 1, 2, 3, 4, 7, 16, 100, 1024} {
		t.Run(fmt.Sprintf("count %d", count), func(t *testing.T) {
			s := stream.Streams{Prefix: "a", Count: count}
			other := stream.Streams{Prefix: "b", Count: count}
			for _, id := range ids {
				got := s.Shard(id)
				if got < 0 || got >= s.Len() {
					t.Fatalf("Shard(%q) = %d, out of [0, %d)", id, got, s.Len())
				}
				// Routing is part of the deployment's contract: FNV-1a mod
				// Count, independent of the prefix and stable across calls.
				h := fnv.New32a()
				h.Write([]byte(id))
				if want := int(h.Sum32() % uint32(s.Len())); got != want {
					t.Errorf("Shard(%q) = %d, want FNV-1a mod %d = %d", id, got, s.Len(), want)
				}
				if again := s.Shard(id); again != got {
					t.Errorf("Shard(%q) changed from %d to %d", id, got, again)
				}
				if o := other.Shard(id); o != got {
					t.Errorf("Shard(%q) depends on the prefix: %d vs %d", id, got, o)
				}
			}
		})
	}
}

// TestStreamsShardSpread: 10,000 device ids spread roughly evenly, with a
// chi-squared statistic far below what a skewed hash would give.
func TestStreamsShardSpread(t *testing.T) {
	const devices = 10_000
	names := map[string]func(i int) string{
		"sequential": func(i int) string { return fmt.Sprintf("device-%05d", i) },
		"mac":        func(i int) string { return fmt.Sprintf("sensor-00:1a:2b:%02x:%02x", i>>8, i&0xff) },
		"plain":      func(i int) string { return fmt.Sprint(i) },
	}
	for name, id := range names {
		for _, count := range []int{4, 7, 16} {
			t.Run(fmt.Sprintf("%s over %d", name, count), func(t *testing.T) {
				s := stream.Streams{Count: count}
				n := make([]int, count)
				for i := range devices {
					n[s.Shard(id(i))]++
				}
				mean := float64(devices) / float64(count)
				chi2 := 0.0
				for shard, c := range n {
					if math.Abs(float64(c)-mean) > 0.1*mean {
						t.Errorf("shard %d has %d devices, more than 10%% off the mean %.0f: %v", shard, c, mean, n)
					}
					chi2 += (float64(c) - mean) * (float64(c) - mean) / mean
				}
				// The 99.9th percentile of chi-squared with 15 degrees of
				// freedom is 37.7; a uniform hash stays well under it.
				if chi2 > 40 {
					t.Errorf("chi-squared %.1f over %d shards: %v", chi2, count, n)
				}
			})
		}
	}
}

func TestParseStreamID(t *testing.T) {
	const max = math.MaxUint64
	tests := []struct {
		name    string
		in      string
		want    stream.StreamID
		str     string // String() of the result
		wantErr bool
	}{
		{name: "ms and seq", in: "1764316800000-3", want: stream.StreamID{MS: 1764316800000, Seq: 3}, str: "1764316800000-3"},
		{name: "ms alone means seq 0", in: "5", want: stream.StreamID{MS: 5}, str: "5-0"},
		{name: "zero", in: "0-0", want: stream.StreamID{}, str: "0-0"},
		{name: "largest", in: "18446744073709551615-18446744073709551615", want: stream.StreamID{MS: max, Seq: max}, str: "18446744073709551615-18446744073709551615"},
		{name: "leading zeros", in: "007-01", want: stream.StreamID{MS: 7, Seq: 1}, str: "7-1"},
		{name: "empty", in: "", wantErr: true},
		{name: "dash only", in: "-", wantErr: true},
		{name: "no seq after dash", in: "5-", wantErr: true},
		{name: "no ms", in: "-5", wantErr: true},
		{name: "three parts", in: "1-2-3", wantErr: true},
		{name: "ms overflows", in: "18446744073709551616-0", wantErr: true},
		{name: "seq overflows", in: "0-18446744073709551616", wantErr: true},
		{name: "negative seq", in: "1--2", wantErr: true},
		{name: "plus sign", in: "+1-2", wantErr: true},
		{name: "space", in: " 1-2", wantErr: true},
		{name: "letters", in: "a-1", wantErr: true},
		{name: "star", in: "*", wantErr: true},
		{name: "special id", in: "$", wantErr: true},
		{name: "range start", in: "-", wantErr: true},
		{name: "greater-than", in: ">", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := stream.ParseStreamID(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseStreamID(%q) = %v, want an error", tt.in, got)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)) {
					t.Errorf("error %q does not quote the id", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseStreamID(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseStreamID(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.str {
				t.Errorf("String() = %q, want %q", got.String(), tt.str)
			}
			if back, err := stream.ParseStreamID(got.String()); err != nil || back != got {
				t.Errorf("ParseStreamID(String()) = %v, %v; want %v", back, err, got)
			}
		})
	}
}

func TestStreamIDLessNext(t *testing.T) {
	const max = math.MaxUint64
	id := func(ms, seq uint64) stream.StreamID { return stream.StreamID{MS: ms, Seq: seq} }
	tests := []struct {
		name string
		a, b stream.StreamID
		less bool // a.Less(b)
	}{
		{name: "equal", a: id(5, 3), b: id(5, 3)},
		{name: "seq orders within ms", a: id(5, 3), b: id(5, 4), less: true},
		{name: "ms first", a: id(5, max), b: id(6, 0), less: true},
		{name: "not numeric strings", a: id(9, 0), b: id(10, 0), less: true},
		{name: "greater ms", a: id(6, 0), b: id(5, max)},
		{name: "zero", a: id(0, 0), b: id(0, 1), less: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Less(tt.b); got != tt.less {
				t.Errorf("%v.Less(%v) = %v, want %v", tt.a, tt.b, got, tt.less)
			}
			if tt.less && tt.b.Less(tt.a) {
				t.Errorf("%v.Less(%v) and the reverse", tt.a, tt.b)
			}
		})
	}

	nexts := []struct {
		name     string
		id, want stream.StreamID
	}{
		{name: "seq increments", id: id(5, 3), want: id(5, 4)},
		{name: "from zero", id: id(0, 0), want: id(0, 1)},
		{name: "no-seq id", id: mustParseStreamID(t, "5"), want: id(5, 1)},
		{name: "max seq rolls over to the next ms", id: id(5, max), want: id(6, 0)},
	}
	for _, tt := range nexts {
		t.Run("next "+tt.name, func(t *testing.T) {
			got := tt.id.Next()
			if got != tt.want {
				t.Errorf("%v.Next() = %v, want %v", tt.id, got, tt.want)
			}
			if !tt.id.Less(got) {
				t.Errorf("%v.Next() = %v is not greater", tt.id, got)
			}
		})
	}
}

func mustParseStreamID(t *testing.T, s string) stream.StreamID {
	t.Helper()
	id, err := stream.ParseStreamID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
