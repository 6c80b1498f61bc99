package connect

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestNotServingYet(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{name: "none", err: nil, want: false},
		{name: "cluster down", err: errors.New("CLUSTERDOWN Hash slot not served"), want: true},
		{name: "try again", err: errors.New("TRYAGAIN Multiple keys request during rehashing of slot"), want: true},
		{name: "loading", err: errors.New("LOADING Redis is loading the dataset in memory"), want: true},
		{name: "master down", err: errors.New("MASTERDOWN Link with MASTER is down"), want: true},
		{name: "no nodes yet", err: errors.New("redis: cluster has no nodes"), want: true},
		{name: "cluster forming", err: fmt.Errorf("%w: node a says cluster_state:fail", errClusterForming), want: true},
		{name: "unreachable", err: errors.New("cannot reach Redis at redis://x: connection refused"), want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NotServingYet(tc.err); got != tc.want {
				t.Errorf("NotServingYet(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestNewRedis(t *testing.T) {
	for _, tc := range []struct {
		name    string
		o       RedisOptions
		cluster bool
		wantErr string
	}{
		{name: "single node", o: RedisOptions{URL: "redis://localhost:6379/0", Cluster: ClusterAuto}},
		{name: "addr parameters make a cluster", o: RedisOptions{URL: "redis://a:7000?addr=b:7001", Cluster: ClusterAuto}, cluster: true},
		{name: "cluster yes", o: RedisOptions{URL: "redis://a:7000", Cluster: ClusterYes}, cluster: true},
		{name: "cluster no", o: RedisOptions{URL: "redis://a:7000", Cluster: ClusterNo}},
		{name: "bad cluster value", o: RedisOptions{URL: "redis://a:7000", Cluster: "maybe"}, wantErr: `--redis-cluster "maybe"`},
		{name: "sentinel and cluster", o: RedisOptions{URL: "redis://s:26379", Cluster: ClusterYes, SentinelMaster: "m"}, wantErr: "give one"},
		{name: "two master names", o: RedisOptions{URL: "redis://s:26379?master_name=a", Cluster: ClusterAuto, SentinelMaster: "b"}, wantErr: "give it once"},
		{name: "not a URL", o: RedisOptions{URL: "http://user:secret@x", Cluster: ClusterAuto}, wantErr: "is not a Redis URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb, err := NewRedis(tc.o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error %q shows the password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rdb.Close()
			if _, ok := rdb.(*redis.ClusterClient); ok != tc.cluster {
				t.Errorf("cluster client %v, want %v", ok, tc.cluster)
			}
		})
	}
}
