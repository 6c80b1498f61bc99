package connect

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisWaitLog is how often RedisWaiting says what it waits for while
// Redis is not serving yet.
const redisWaitLog = 5 * time.Second

// errClusterForming: a node of the Redis Cluster does not say
// cluster_state:ok yet.
var errClusterForming = errors.New("the Redis Cluster is not formed yet")

// NotServingYet reports whether err is one a Redis that is still starting
// answers, which goes away by itself: a Redis Cluster being created or
// converging (CLUSTERDOWN: slots not assigned or the cluster state not ok
// yet; TRYAGAIN during a resharding; nodes that serve no slot yet), a node
// loading its data set (LOADING), or a replica whose master is not linked
// (MASTERDOWN). An unreachable Redis is not one of them: serve still exits
// at once on that (a wrong address is the usual cause).
func NotServingYet(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, errClusterForming) {
		return true
	}
	msg := err.Error()
	// "cluster has no nodes": go-redis's answer when no node of the
	// cluster serves a slot yet (nodes started, the cluster not created).
	for _, s := range []string{"CLUSTERDOWN", "TRYAGAIN", "LOADING", "MASTERDOWN", "cluster has no nodes"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// Wait says how RedisWaiting waits.
type Wait struct {
	// For bounds the wait (--redis-wait); 0 does not wait.
	For time.Duration
	// ProbeAddr, when not "", is where /readyz, and every request but
	// /livez, answers 503 while Redis is not serving (the HTTP gateway's or
	// the admin endpoint's address, bound by the real listener later).
	ProbeAddr string
	// ProbeTLS, when not nil, serves ProbeAddr over TLS with it, as the
	// real listener will (the HTTP gateway with --http-tls-cert): a probe
	// that asks over HTTPS gets its 503, not a failed handshake.
	ProbeTLS *tls.Config
	// Check, when not nil, runs once Redis serves (e.g. the deployment's key
	// layout, Streams.Check); an error of it that NotServingYet reports
	// waits too.
	Check func(context.Context, redis.UniversalClient) error
	Log   *slog.Logger
}

// RedisWaiting connects to Redis (see Redis) and runs w.Check. While Redis
// answers that it is not serving yet (NotServingYet: e.g. a Redis Cluster
// right after `redis-cli --cluster create`, still converging), it tries
// again every half second, for up to w.For, logging what it waits for every
// redisWaitLog; meanwhile w.ProbeAddr answers 503. Any other failure, and
// the wait running out, is returned.
func RedisWaiting(ctx context.Context, o RedisOptions, w Wait) (redis.UniversalClient, error) {
	start := time.Now()
	var (
		probe   *waitingEndpoint
		lastLog time.Time
	)
	defer func() {
		if probe != nil {
			probe.close()
		}
	}()
	for {
		rdb, err := Redis(ctx, o)
		if err == nil {
			if err = redisServing(ctx, rdb); err == nil && w.Check != nil {
				err = w.Check(ctx, rdb)
			}
			if err == nil {
				if probe != nil {
					w.Log.Info("redis is serving", "waited", time.Since(start).Round(time.Millisecond))
				}
				return rdb, nil
			}
			rdb.Close()
		}
		if !NotServingYet(err) {
			return nil, err
		}
		waited := time.Since(start)
		if waited >= w.For {
			return nil, fmt.Errorf("redis at %s is still not serving after --redis-wait %s: %w", RedactURL(o.URL), w.For, err)
		}
		if probe == nil && w.ProbeAddr != "" {
			// Best effort: a port in use is reported when the real
			// listener binds it.
			probe, _ = startWaitingEndpoint(w.ProbeAddr, w.ProbeTLS, "redis_not_serving")
		}
		if probe != nil {
			probe.setError(err)
		}
		if time.Since(lastLog) >= redisWaitLog {
			lastLog = time.Now()
			w.Log.Warn("waiting for Redis to serve (a Redis Cluster forming or converging); /readyz answers 503 meanwhile",
				"redis", RedactURL(o.URL), "waited", waited.Round(time.Second), "redis_wait", w.For, "err", err)
		}
		t := time.NewTimer(500 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("interrupted while waiting for Redis to serve: %w", err)
		case <-t.C:
		}
	}
}

// redisServing checks, on a Redis Cluster, that every primary the client
// knows says cluster_state:ok (after `redis-cli --cluster create` the nodes
// agree on the slots only after a while).
func redisServing(ctx context.Context, rdb redis.UniversalClient) error {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		info, err := node.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("redis cluster node %s: CLUSTER INFO: %w", node.Options().Addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%w: node %s says %s", errClusterForming, node.Options().Addr, clusterInfoField(info, "cluster_state"))
		}
		return nil
	})
}

// clusterInfoField is field:value of a CLUSTER INFO answer, or field:?.
func clusterInfoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if strings.HasPrefix(line, field+":") {
			return strings.TrimSpace(line)
		}
	}
	return field + ":?"
}

// waitingEndpoint serves, while serve waits for Redis, 503 on every path
// (a JSON body with the reason and the last error, Retry-After: 1) but
// /livez (200: the process is alive, only not ready).
type waitingEndpoint struct {
	srv  *http.Server
	done chan struct{}
	mu   sync.Mutex
	last string // the last error
}

func startWaitingEndpoint(addr string, tc *tls.Config, reason string) (*waitingEndpoint, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	w := &waitingEndpoint{done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(rw http.ResponseWriter, _ *http.Request) {
		writeJSON(rw, http.StatusOK, []byte(`{"status":"ok"}`))
	})
	mux.HandleFunc("/", func(rw http.ResponseWriter, _ *http.Request) {
		w.mu.Lock()
		msg := w.last
		w.mu.Unlock()
		b, _ := json.Marshal(struct {
			Status string `json:"status"`
			Reason string `json:"reason"`
			Error  string `json:"error"`
		}{"unavailable", reason, msg})
		rw.Header().Set("Retry-After", "1")
		writeJSON(rw, http.StatusServiceUnavailable, b)
	})
	w.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(w.done)
		_ = w.srv.Serve(ln)
	}()
	return w, nil
}

func writeJSON(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func (w *waitingEndpoint) setError(err error) {
	w.mu.Lock()
	w.last = err.Error()
	w.mu.Unlock()
}

// close stops the endpoint and waits until its listener is closed, so the
// real one can bind the address.
func (w *waitingEndpoint) close() {
	w.srv.Close()
	<-w.done
}
